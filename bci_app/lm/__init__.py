"""Character language model: n-gram counts with Kneser-Ney smoothing, its file format.

The KenLM adapter and the beam searches that fuse it with brain posteriors.
"""
