"""The dense network and its training engines, with a train core that does no I/O."""
