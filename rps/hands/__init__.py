"""Subpackage: MediaPipe's hand models, run with LiteRT, and the 21 landmarks they give."""
