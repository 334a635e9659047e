"""Typing (Brain2Qwerty): the alphabet, the keystroke and CTC decoders, their evaluation.

The 29-class alphabet, keystroke-locked (v1) and CTC (v2) decoders and their offline evaluation.
"""
