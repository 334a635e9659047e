"""Live decoding: the pipeline worker, the decoding session with its per-task strategies.

It also holds latency metrics and :func:`open_session`, the one place that connects streams
to a decoder.
"""
