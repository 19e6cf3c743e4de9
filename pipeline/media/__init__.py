"""Decoding: containers, video readers (PyAV, decord), frame sampling specs and the audio track."""
