"""Collection: fetch the pages, parse them, prove and scan the processes, build a snapshot."""
