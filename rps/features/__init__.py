"""Subpackage: what feeds the head, computed once and cached."""
