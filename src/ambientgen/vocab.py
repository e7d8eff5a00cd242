"""The token ids of the score2perf performance encoding, in the one place every layer reads them from.

The encoder itself is music/performance.py; the model (models/state.py) needs the same layout to follow which
notes sound, and sits below the music layer, so the layout lives here.
"""

STEPS_PER_SECOND = 100
MAX_SHIFT_STEPS = 100
NUM_VELOCITY_BINS = 32
NUM_PITCHES = 128
NUM_RESERVED_IDS = 2
PAD_ID = 0
EOS_ID = 1

NOTE_ON_OFFSET = NUM_RESERVED_IDS  # 2
NOTE_OFF_OFFSET = NOTE_ON_OFFSET + NUM_PITCHES  # 130
TIME_SHIFT_OFFSET = NOTE_OFF_OFFSET + NUM_PITCHES  # 258, id of TIME_SHIFT 1
VELOCITY_OFFSET = TIME_SHIFT_OFFSET + MAX_SHIFT_STEPS  # 358, id of VELOCITY bin 1
VOCAB_SIZE = VELOCITY_OFFSET + NUM_VELOCITY_BINS  # 390
NUM_EVENTS = VOCAB_SIZE - NUM_RESERVED_IDS  # 388
