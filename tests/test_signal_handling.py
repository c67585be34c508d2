"""rnnmnist.signals and rnnmnist.errors.ExitCode: one exception, one way to install handlers, one table of codes.

The signals are real (``os.kill`` of this process), delivered in the main thread.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from rnnmnist import signals
from rnnmnist.errors import BadValueError, ExitCode, RnnmnistError


def test_handling_installs_for_the_block_and_restores_what_was_there() -> None:
    before = {s: signal.getsignal(s) for s in signals.SIGNALS}
    seen: list[int] = []
    with signals.handling(lambda signum, frame: seen.append(signum)):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert seen == [signal.SIGTERM, signal.SIGINT]
    assert {s: signal.getsignal(s) for s in signals.SIGNALS} == before


def test_handling_outside_the_main_thread_installs_nothing() -> None:
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            with signals.handling(signals.raise_interrupted):
                pass
        except BaseException as e:  # reported to the test thread below
            errors.append(e)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert errors == []


@pytest.mark.parametrize(("sig", "name", "code"), [(signal.SIGINT, "SIGINT", 130), (signal.SIGTERM, "SIGTERM", 143)])
def test_interrupting_raises_one_exception_that_names_the_signal_and_its_code(sig: int, name: str, code: int) -> None:
    with pytest.raises(signals.Interrupted) as caught, signals.interrupting():
        os.kill(os.getpid(), sig)
    assert (caught.value.signum, caught.value.name, caught.value.exit_code, caught.value.at_once) == (
        sig,
        name,
        code,
        False,
    )


def test_graceful_stop_answers_the_first_signal_and_a_second_unwinds_at_once() -> None:
    with signals.GracefulStop() as stop:
        assert stop() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() == signal.SIGTERM
        with pytest.raises(signals.Interrupted) as caught:
            os.kill(os.getpid(), signal.SIGINT)
    assert caught.value.at_once and caught.value.signum == signal.SIGINT


def test_held_signals_arrive_after_the_block() -> None:
    seen: list[str] = []
    with signals.handling(lambda signum, frame: seen.append("handled")):
        with signals.held():  # held in this thread: sent to it (other threads of pytest's may take a process's)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
            seen.append("still inside")
        seen.append("after")
    assert seen == ["still inside", "handled", "after"]


def test_signal_names_for_unknown_numbers() -> None:
    assert signals.signal_name(signal.SIGINT) == "SIGINT"
    assert signals.signal_name(99) == "signal 99"


def test_exit_codes_are_one_enum_with_a_meaning_each() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 130, 143]
    assert RnnmnistError.exit_code == ExitCode.FAILURE and BadValueError.exit_code == ExitCode.USAGE
    assert all(c.meaning for c in ExitCode)
    assert ExitCode.for_signal(signal.SIGTERM) == ExitCode.TERMINATED
