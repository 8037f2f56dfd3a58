"""The math libraries compute on the calling thread: their own thread pools (BLAS, OpenMP) held to one thread."""

from __future__ import annotations

from threadpoolctl import threadpool_limits


def one_thread_per_call() -> None:
    """Hold every BLAS and OpenMP library loaded so far to one thread (call it once the models are loaded).

    The server's parallelism is its worker threads, one per core. A numpy product of a few hundred rows (the
    log-mel of a sentence) otherwise wakes OpenBLAS's pool of one thread per core, whose threads then spin
    waiting for more work on the cores the workers and Whisper need: on this project's 2-core machine that spin
    doubled the process CPU of a Whisper decoding (46 -> 93 ms for 6 s of speech).
    """
    threadpool_limits(limits=1)
