"""The reaper: its policy and verified signals, one run, and its state file."""
