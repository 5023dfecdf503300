"""C11: point-to-point semantics per backend (docs/adr/0015-p2p-and-backend-semantics.md).

Each ring-shift spelling either completes or hangs as it does under that backend in PyTorch;
a hang is a DeadlockError whose report names the backend rule that made it one.
"""

import pytest

import coopsim

BACKENDS = ("nccl", "gloo")


def ring(ctx, spelling, backend, nprocs=4, numel=4):
    """Run a ring shift (each rank sends to rank+1, receives from rank-1) spelled as given;
    returns what every rank received."""
    got = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group(backend)
        p = dist.get_world_size()
        right, left = (rank + 1) % p, (rank - 1) % p
        out, inp = ctx.full((numel,), float(rank)), ctx.zeros(numel)
        if spelling == "isend+recv":
            req = dist.isend(out, right)
            dist.recv(inp, left)
            req.wait()
        elif spelling == "isend+irecv":
            reqs = [dist.isend(out, right), dist.irecv(inp, left)]
            for req in reqs:
                req.wait()
        elif spelling == "irecv+isend":
            reqs = [dist.irecv(inp, left), dist.isend(out, right)]
            for req in reqs:
                req.wait()
        elif spelling == "batch_isend_irecv":
            for req in dist.batch_isend_irecv([dist.P2POp(dist.isend, out, right),
                                               dist.P2POp(dist.irecv, inp, left)]):
                req.wait()
        else:  # "send+recv": blocking send first
            dist.send(out, right)
            dist.recv(inp, left)
        got[rank] = inp.tolist()

    ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=nprocs)
    return got


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spelling", ["isend+recv", "isend+irecv", "irecv+isend", "batch_isend_irecv"])
def test_c11_ring_shift_spellings_that_complete_under_both_backends(backend, spelling):
    with coopsim.RuntimeContext("small") as ctx:
        got = ring(ctx, spelling, backend)
    assert got == {r: [float((r - 1) % 4)] * 4 for r in range(4)}


def test_c11_blocking_send_first_ring_hangs_under_gloo_at_the_hosts():
    with coopsim.RuntimeContext("small") as ctx, pytest.raises(coopsim.DeadlockError) as info:
        ring(ctx, "send+recv", "gloo")
    text = str(info.value)
    assert "point-to-point wait-for cycle: rank 0 send(dst=1) -> rank 1 send(dst=2) -> rank 2 send(dst=3) " \
           "-> rank 3 send(dst=0) -> rank 0" in text
    assert "under gloo, send() blocks the host until the peer has posted the matching recv" in text


def test_c11_blocking_send_first_ring_hangs_under_nccl_on_the_streams():
    """The hosts go on (WorkNCCL::wait only blocks the current stream); the first host read
    of the received tensor waits for a recv that its stream orders after the send."""
    with coopsim.RuntimeContext("small") as ctx, pytest.raises(coopsim.DeadlockError) as info:
        ring(ctx, "send+recv", "nccl")
    report = info.value.report
    assert [row["waits_for"] for row in report["ranks"]] == [
        f"recv(src={(r - 1) % 4}) by rank {r}" for r in range(4)]
    assert "p2p semantics: under nccl, each send/recv runs on its peer pair's stream" in str(info.value)


def test_c11_nccl_ops_to_different_peers_progress_concurrently():
    """Unbatched isend/irecv to two peers overlap (one stream per pair) about as well as the
    batched form: a shared stream would serialize them (twice the time)."""
    times = {}
    for spelling in ("isend+irecv", "batch_isend_irecv"):
        with coopsim.RuntimeContext("small") as ctx:
            ring(ctx, spelling, "nccl", numel=1 << 16)
            times[spelling] = ctx.sim.now_ns()
    assert times["isend+irecv"] <= 1.1 * times["batch_isend_irecv"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_c11_pipeline_1f1b_steady_state_with_unbatched_isend_irecv(backend):
    """Megatron's unbatched p2p (even stages send first, odd stages receive first) in a
    1F1B steady state: every stage sends an activation forward and a gradient backward per step."""
    p, steps = 4, 3
    seen = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group(backend)
        act, grad = ctx.full((8,), float(rank)), ctx.full((8,), float(-rank))
        for step in range(steps):
            ops = []
            if rank + 1 < p:  # send_forward_recv_backward with rank + 1
                got_grad = ctx.zeros(8)
                pair = [(dist.isend, act, rank + 1), (dist.irecv, got_grad, rank + 1)]
                ops += pair if rank % 2 == 0 else pair[::-1]
            if rank > 0:  # send_backward_recv_forward with rank - 1
                got_act = ctx.zeros(8)
                pair = [(dist.isend, grad, rank - 1), (dist.irecv, got_act, rank - 1)]
                ops += pair if rank % 2 == 0 else pair[::-1]
            works = [op(t, peer) for op, t, peer in ops]
            for w in works:
                w.wait()
            if rank > 0:
                seen[(rank, step, "act")] = got_act.tolist()[0]
                act = got_act + 1
            if rank + 1 < p:
                seen[(rank, step, "grad")] = got_grad.tolist()[0]
                grad = got_grad - 1

    with coopsim.RuntimeContext("small") as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=p)
    expected, act, grad = {}, {s: float(s) for s in range(p)}, {s: float(-s) for s in range(p)}
    for step in range(steps):  # the same exchange, in plain Python
        for s in range(1, p):
            expected[(s, step, "act")] = act[s - 1]
        for s in range(p - 1):
            expected[(s, step, "grad")] = grad[s + 1]
        act.update({s: expected[(s, step, "act")] + 1 for s in range(1, p)})
        grad.update({s: expected[(s, step, "grad")] - 1 for s in range(p - 1)})
    assert seen == expected


def test_c11_unknown_backend_lists_the_accepted_ones():
    def worker(rank, ctx):
        ctx.distributed.init_process_group("mpi")

    with coopsim.RuntimeContext("small") as ctx, pytest.raises(coopsim.SpawnException) as info:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
    msg = str(info.value.errors[0])
    assert "unknown backend 'mpi'" in msg and "'nccl', 'gloo', 'coopsim'" in msg and "cpu:gloo,cuda:nccl" in msg


def test_c11_plain_backend_names_mean_what_their_spelled_out_forms_mean():
    """None and the plain names are looked up (backend._PLAIN); each must mean what the
    parser makes of the same choice spelled another way (torch: distributed_c10d.Backend)."""
    from coopsim.distributed.backend import DEFAULT, cuda_backend

    assert cuda_backend(None) == cuda_backend(f" {DEFAULT} ") == "nccl"
    for name in ("nccl", "gloo", "coopsim"):
        assert cuda_backend(name) == cuda_backend(f" {name.upper()} ") == cuda_backend(f"cuda:{name}")
    assert cuda_backend("gloo") == "gloo" and cuda_backend("coopsim") == "nccl"


def test_c11_backend_class_and_cpu_only_string():
    with coopsim.RuntimeContext("small") as ctx:
        Backend = ctx.distributed.Backend
        assert Backend("NCCL") == Backend.NCCL == "nccl" and Backend.GLOO == "gloo"
        with pytest.raises(ValueError, match="unknown backend 'ucc'"):
            Backend("ucc")

        def worker(rank, ctx):
            ctx.distributed.init_process_group("cpu:gloo")

        with pytest.raises(coopsim.SpawnException) as info:
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=1)
        assert "maps no backend to cuda" in str(info.value.errors[0])


def test_c11_nccl_does_not_support_recv_from_any_source_and_gloo_does():
    got = {}

    def worker(rank, ctx, backend):
        dist = ctx.distributed
        dist.init_process_group(backend)
        t = ctx.full((2,), float(rank))
        if rank == 1:
            dist.send(t, 0)
        else:
            got[backend] = dist.recv(t)

    with coopsim.RuntimeContext("small") as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx, "gloo"), nprocs=2)
        assert got == {"gloo": 1}
        with pytest.raises(coopsim.SpawnException) as info:
            ctx.multiprocessing.spawn(worker, args=(ctx, "nccl"), nprocs=2)
    assert "Backend nccl does not support recvAnysource" in str(info.value.errors[0])


DELAY_NS = 10_000


def host_return_ns(backend, op0, op1, group_backend=None) -> float:
    """When rank 0's call ``op0(dist, tensor, group)`` returns, rank 1 calling ``op1``
    ``DELAY_NS`` late (on a group with its own backend if ``group_backend``)."""
    returned = []

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group(backend, init_method="env://")
        group = dist.new_group([0, 1], backend=group_backend) if group_backend else None
        t = ctx.ones(1 << 12)
        if rank == 1:
            ctx.wait(ctx.sim.timer(DELAY_NS))
        (op0 if rank == 0 else op1)(dist, t, group)
        if rank == 0:
            returned.append(ctx.sim.now_ns())

    with coopsim.RuntimeContext("small") as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
    return returned[0]


def send(dist, t, group):
    dist.send(t, 1, group=group)


def recv(dist, t, group):
    dist.recv(t, 0, group=group)


def all_reduce(dist, t, group):
    dist.all_reduce(t, group=group)


@pytest.mark.parametrize("backend, semantics", [(None, "nccl"), ("coopsim", "nccl"), ("NCCL", "nccl"),
                                                ("gloo", "gloo"), ("cpu:gloo,cuda:nccl", "nccl"),
                                                ("cuda:gloo", "gloo")])
def test_c11_backend_strings_decide_whether_send_blocks_the_host(backend, semantics):
    """gloo: a blocking send returns after the peer's recv; nccl: at once (the stream waits)."""
    assert (host_return_ns(backend, send, recv) >= DELAY_NS) == (semantics == "gloo")


def test_c11_a_blocking_collective_blocks_the_host_under_gloo_not_under_nccl():
    assert host_return_ns("nccl", all_reduce, all_reduce) < DELAY_NS <= host_return_ns("gloo", all_reduce, all_reduce)


def async_all_reduce_wait(dist, t, group):
    dist.all_reduce(t, group=group, async_op=True).wait()


def async_barrier_wait(dist, t, group):
    dist.barrier(group=group, async_op=True).wait()


def test_c11_an_async_collective_s_wait_blocks_the_host_under_gloo_not_under_nccl():
    """``WorkNCCL::wait`` makes the current stream wait; a barrier's Work and gloo's block the host."""
    assert host_return_ns("nccl", async_all_reduce_wait, all_reduce) < DELAY_NS
    assert host_return_ns("gloo", async_all_reduce_wait, all_reduce) >= DELAY_NS
    assert host_return_ns("nccl", async_barrier_wait, async_barrier_wait) >= DELAY_NS
    assert host_return_ns("nccl", async_all_reduce_wait, all_reduce, group_backend="gloo") >= DELAY_NS


def test_c11_a_handoff_after_an_nccl_work_wait_is_not_a_deadlock():
    """Rank 0 waits on its async all_reduce, then hands rank 1 a value through a queue; rank 1
    joins the all_reduce only after it got the value. Under NCCL ``work.wait()`` returns at
    once, so this completes; a host that blocked in ``wait`` would make it a (false) deadlock."""
    got = []

    def worker(rank, ctx, q):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.full((4,), float(rank + 1))
        if rank == 0:
            dist.all_reduce(t, async_op=True).wait()
            q.put("go")
        else:
            assert q.get() == "go"
            dist.all_reduce(t)
        got.append((rank, t.tolist()))

    with coopsim.RuntimeContext("small") as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx, ctx.multiprocessing.SimpleQueue()), nprocs=2)
    assert sorted(got) == [(0, [3.0] * 4), (1, [3.0] * 4)]


def test_c11_a_group_s_own_backend_decides_its_p2p_semantics():
    assert host_return_ns("nccl", send, recv, group_backend="gloo") >= DELAY_NS
    assert host_return_ns("gloo", send, recv, group_backend="nccl") < DELAY_NS

    def worker(rank, ctx):
        ctx.distributed.init_process_group()
        ctx.distributed.new_group([0, 1], backend="bogus")

    with coopsim.RuntimeContext("small") as ctx, pytest.raises(coopsim.SpawnException) as info:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
    assert "unknown backend 'bogus'" in str(info.value.errors[0])


def side_stream_program(rank, ctx, got, spelling):
    """Rank computes on a side stream (after waiting for the default one, as a correct
    PyTorch program must) and reduces there; ``spelling`` is how it waits for the collective."""
    dist = ctx.distributed
    dist.init_process_group("nccl")
    x = ctx.ones(1 << 16) * (rank + 1)
    s = ctx.cuda.Stream()
    s.wait_stream(ctx.cuda.current_stream())
    with ctx.cuda.stream(s):
        for _ in range(8):  # side-stream work that takes longer than the launch of the collective
            x = x * 1.0
        y = x * 2
        if spelling == "sync":
            dist.all_reduce(y)
        elif spelling == "work.wait":
            dist.all_reduce(y, async_op=True).wait()
        else:
            dist.batch_isend_irecv([dist.P2POp(dist.isend, y, 1 - rank),
                                    dist.P2POp(dist.irecv, x, 1 - rank)])[1].wait()
            y = x
        z = y + 0  # on the side stream: must see the collective's result
    got[rank] = (z[:2].tolist(), y[:2].tolist())


@pytest.mark.parametrize("spelling", ["sync", "work.wait", "p2p"])
def test_c11_a_collective_on_a_side_stream_waits_for_it_and_the_stream_waits_for_the_collective(spelling):
    """The NCCL stream waits for the caller's current stream before it launches
    (ProcessGroupNCCL's syncStream), and ``work.wait()`` / a sync collective make the current
    stream wait for it: on a side stream, the collective reads what the stream computed and
    the stream's next op reads the result (before, the op sat on the default stream only and
    read the tensor before the side stream wrote it: a silent wrong answer)."""
    got = {}
    with coopsim.RuntimeContext("dgx_h100") as ctx:
        ctx.multiprocessing.spawn(side_stream_program, args=(ctx, got, spelling), nprocs=2)
    want = [[4.0, 4.0], [2.0, 2.0]] if spelling == "p2p" else [[6.0, 6.0]] * 2
    assert [got[r] for r in range(2)] == [(w, w) for w in want]


def test_c11_an_async_all_reduce_does_not_hold_back_a_later_send():
    """Data parallel overlapped with a pipeline send: rank 0 starts an async all_reduce of its
    gradients, sends activations to rank 1, then waits; rank 1 receives, then joins the
    all_reduce. The all_reduce runs on the NCCL stream, so the send (which waits only for the
    current stream) goes ahead: PyTorch completes this, and so must coopsim (it reported a
    deadlock while collectives sat on the compute stream)."""
    got = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        grads = ctx.full((256,), float(rank + 1))
        acts = ctx.full((4,), float(10 + rank))
        if rank == 0:
            work = dist.all_reduce(grads, async_op=True)
            dist.send(acts, 1)
            work.wait()
        else:
            dist.recv(acts, 0)
            dist.all_reduce(grads)
        got[rank] = (grads[:1].tolist(), acts.tolist())

    with coopsim.RuntimeContext("dgx_h100") as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
    assert got == {0: ([3.0], [10.0] * 4), 1: ([3.0], [10.0] * 4)}


def test_c11_an_async_collective_overlaps_compute_until_waited():
    """Compute issued after an async all_reduce runs while it is in flight (the NCCL stream):
    it ends before the collective does; after ``work.wait()`` the compute stream's next op
    starts only once the collective ended."""
    marks = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        big, x = ctx.ones(1 << 22), ctx.ones(1 << 10)
        ctx.cuda.synchronize()
        work = dist.all_reduce(big, async_op=True)
        x.mul_(2.0)
        during = ctx.cuda.current_stream().record_event()
        work.wait()
        collective = ctx.cuda.current_stream().record_event()
        x.mul_(2.0)
        after = ctx.cuda.current_stream().record_event()
        for name, event in (("during", during), ("collective", collective), ("after", after)):
            event.synchronize()
            marks[rank, name] = ctx.sim.now_ns()

    with coopsim.RuntimeContext("dgx_h100") as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
    for r in range(2):
        assert marks[r, "during"] < marks[r, "collective"] < marks[r, "after"]


def test_c11_a_gloo_barrier_does_not_wait_for_nccl_work_on_the_device():
    """A gloo group used for host synchronization next to nccl collectives: rank 0 reduces,
    then meets rank 1 at the gloo barrier; rank 1 meets it first, then reduces. gloo's barrier
    has no tensor and waits for no CUDA stream (ProcessGroupGloo's barrier waits for the
    group's earlier work only), so PyTorch completes this; it was reported as a deadlock while
    the barrier was queued behind the all_reduce on the device's stream."""
    got = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        cpu = dist.new_group([0, 1], backend="gloo")
        t = ctx.full((8,), float(rank + 1))
        if rank == 0:
            dist.all_reduce(t)
            dist.barrier(group=cpu)
        else:
            dist.barrier(group=cpu)
            dist.all_reduce(t)
        got[rank] = t.tolist()

    with coopsim.RuntimeContext("dgx_h100") as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
    assert got == {0: [3.0] * 8, 1: [3.0] * 8}


def _two_groups_in_opposite_orders(rank, ctx, async_op, got):
    dist = ctx.distributed
    dist.init_process_group("nccl")
    g1, g2 = dist.new_group([0, 1]), dist.new_group([0, 1])
    a, b = ctx.ones(4), ctx.ones(4) * 2
    order = [(g1, a), (g2, b)] if rank == 0 else [(g2, b), (g1, a)]
    works = [dist.all_reduce(t, group=g, async_op=async_op) for g, t in order]
    for work in works if async_op else ():
        work.wait()
    got[rank] = (a.tolist()[0], b.tolist()[0])


def test_c11_each_group_has_its_own_nccl_stream():
    """Two groups of the same ranks, reduced in opposite orders. Each ProcessGroupNCCL has its
    own stream, which waits for the current stream at launch: async calls complete; sync calls
    make the current stream wait for each, so the second group's op waits for the first's,
    which waits for the peer's second: a real hang under NCCL, reported as a deadlock."""
    got = {}
    with coopsim.RuntimeContext("dgx_h100") as ctx:
        ctx.multiprocessing.spawn(_two_groups_in_opposite_orders, args=(ctx, True, got), nprocs=2)
        assert got == {0: (2.0, 4.0), 1: (2.0, 4.0)}
        with pytest.raises(coopsim.DeadlockError, match="all_reduce #1 on group group2"):
            ctx.multiprocessing.spawn(_two_groups_in_opposite_orders, args=(ctx, False, {}), nprocs=2)
