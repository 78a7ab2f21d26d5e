"""The exporter-silencing redirection of file descriptors 1 and 2 (adapters/fallback.quiet_fds) is
safe when two threads export at once and when nested: afterwards fd 1 and 2 are the process's own
again. Without serialisation, the second thread saved the first one's sink as "the original" and
restored it last, leaving stdout pointing at a deleted temporary file."""
import os
import threading

from agnostic_cam.engine.eager import quiet_fds


def ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def test_two_threads_and_nesting_leave_stdout_and_stderr_intact(capfd):
    before = ident(1), ident(2)
    a_in, b_in = threading.Event(), threading.Event()
    seen: dict = {}

    def first():
        with quiet_fds():
            os.write(1, b"exporter noise A\n")
            a_in.set()
            seen["b_overlapped"] = b_in.wait(0.5)  # the second thread must not get in while we are inside
            with quiet_fds():  # nested: no deadlock, still quiet
                os.write(2, b"nested noise\n")

    def second():
        a_in.wait(5)
        with quiet_fds():
            b_in.set()
            os.write(1, b"exporter noise B\n")
            threading.Event().wait(0.2)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert (ident(1), ident(2)) == before
    assert seen["b_overlapped"] is False
    os.write(1, b"visible\n")
    out, err = capfd.readouterr()
    assert out == "visible\n" and "noise" not in err
