import Checkpoint
