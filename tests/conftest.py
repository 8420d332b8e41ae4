"""Test session set-up: a private compile cache, so every run exercises the
compile path (numba -> shared object) and leaves nothing in the user's cache.
Set before dataplane is imported; CLI subprocesses inherit it."""

import os
import shutil
import tempfile

import pytest

_CACHE = None
if "DATAPLANE_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="dataplane-test-cache-")
    os.environ["DATAPLANE_CACHE_DIR"] = _CACHE


@pytest.fixture
def workers():
    """use_workers(n) for the test; the process's setting restored after."""
    from dataplane import config
    from dataplane.workers import use_workers
    saved = config.WORKERS
    yield use_workers
    config.WORKERS = saved


def pytest_sessionfinish(session, exitstatus):
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)
