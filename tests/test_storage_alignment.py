"""Large storages start on a cache line (ADR-0034): once malloc serves them from the heap they
sit 16 bytes into a line, ranks' buffers end up misaligned against each other, and numpy's
elementwise loops over them run up to 3x slower. Contents and semantics stay those of numpy's
``empty``/``zeros``/``ones``."""

import numpy as np

import coopsim
from coopsim.tensor.storage import ALIGN_BYTES, ALIGNED_FROM_BYTES, aligned


def test_aligned_arrays_start_on_a_cache_line_with_numpys_contents():
    for init in (np.empty, np.zeros, np.ones):
        for shape, dtype in (((262_145,), np.float32), ((3, 5_001), np.float64), ((70_001,), np.bool_)):
            for _ in range(4):  # several allocations, so some would come from the heap
                a = aligned(init, shape, dtype)
                assert (a.shape, a.dtype) == (shape, np.dtype(dtype))
                assert a.ctypes.data % ALIGN_BYTES == 0 and a.flags.c_contiguous and a.flags.writeable
                if init is not np.empty:
                    assert (a == (1 if init is np.ones else 0)).all()


def test_large_tensors_of_every_creation_path_are_aligned_small_ones_keep_numpys_placement():
    n = ALIGNED_FROM_BYTES // 4
    found = {}

    def worker(rank, ctx):
        for _ in range(3):
            big = (ctx.ones(n), ctx.zeros(n), ctx.empty(n), ctx.ones(n) + 1)
            found[rank] = [t._storage.data.ctypes.data % ALIGN_BYTES for t in big]
            assert (big[0].numpy() == 1).all() and (big[1].numpy() == 0).all() and (big[3].numpy() == 2).all()
        small = ctx.ones(n // 2 - 1)
        found["small", rank] = small._storage.data.base is None  # numpy's own array, as before

    with coopsim.RuntimeContext("dgx_h100") as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
    assert found[0] == found[1] == [0, 0, 0, 0]
    assert found["small", 0] and found["small", 1]
