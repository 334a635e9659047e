"""Typing (Brain2Qwerty): the 29-class alphabet, keystroke (v1) and CTC (v2) decoders and
their offline evaluation.
"""
