#!/usr/bin/env bash
# Instructions per timer wait (callgrind), a figure that shared, noisy machines do not move:
#   bash benches/wait_instructions.sh [RANKS] [WAITS]      (from the checkout's root; needs valgrind)
# Runs RANKS ranks doing WAITS timer waits in all, and once with one wait per rank; prints the
# difference of executed instructions divided by the waits, then the same for a raw greenlet
# round trip (the physical floor). Takes a few minutes: callgrind runs Python ~50x slower.
set -eu
ranks=${1:-100}; waits=${2:-100000}
python=${PYTHON:-python}
ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$python" -c "$1" 2>&1 \
         | awk '/Collected/ {print $4}'; }
wait_prog() { echo "
import coopsim
def waiter(rank, ctx, n):
    wait, timer = ctx.wait, ctx.sim.timer
    for _ in range(n):
        wait(timer(1))
with coopsim.RuntimeContext() as ctx:
    ctx.multiprocessing.spawn(waiter, args=(ctx, $1), nprocs=$ranks)"; }
raw_prog() { echo "
from greenlet import getcurrent, greenlet
main = getcurrent()
def bounce():
    while True:
        main.switch()
switch = greenlet(bounce).switch
for _ in range($1):
    switch()"; }
per_rank=$(( waits / ranks ))
a=$(ir "$(wait_prog 1)"); b=$(ir "$(wait_prog $per_rank)")
echo "timer wait, $ranks ranks: $(( (b - a) / (waits - ranks) )) instructions"
a=$(ir "$(raw_prog 1)"); b=$(ir "$(raw_prog $waits)")
echo "raw greenlet round trip: $(( (b - a) / (waits - 1) )) instructions"
