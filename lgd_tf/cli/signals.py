"""SIGTERM / SIGINT as a stop request: training saves a checkpoint and exits (resumable).

Preemptible VMs and cluster schedulers send SIGTERM some seconds before they kill a job; the
first SIGTERM or SIGINT sets the request that `lgd_tf.training.loop.fit_stage` checks after
every step. A second signal stops at once (KeyboardInterrupt), as Ctrl-C twice would.
"""

import contextlib
import signal
import threading


class StopRequest(threading.Event):
    """An Event with the name of the signal that set it (`reason`)."""

    reason = None


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT)):
    """Yields a `StopRequest` set by the first of `signals` while the block runs."""
    request = StopRequest()

    def handle(signum, frame):
        del frame
        if request.is_set():
            raise KeyboardInterrupt
        request.reason = signal.Signals(signum).name
        request.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            previous[signum] = signal.signal(signum, handle)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
