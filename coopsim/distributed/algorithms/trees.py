"""Tree algorithms: binomial trees, and the double binary tree.

Binomial (Thakur, Rabenseifner & Gropp 2005, IJHPCA 19(1)), on relative ranks
v = (rank - root) mod p, L = ceil(lg p) steps:
- reduce: at step j (mask m = 2^j) every v = m mod 2m sends its partial to v - m;
- broadcast: the mirror image, masks 2^(L-1) down to 1: every v = 0 mod 2m sends to v + m;
- all_reduce: reduce to rank 0, then broadcast from rank 0;
- gather/scatter: the same trees moving blocks of consecutive relative ranks, assembled in
  "tmp" in relative order (rank v's "tmp"[(u - v) * count] holds rank u's chunk); the root
  rotates between relative and absolute order with local copies.

Double binary tree (as NCCL's, not pipelined): two binary trees over the same ranks, each
carrying one half of the data, built so that every rank except the root is an interior node in
at most one of them. Construction, with v the relative rank and m = p - 1: the in-order
binary tree on labels 1..m (root = the largest power of two <= m; even labels are interior,
odd labels are leaves). Tree A gives rank v the label v, tree B the label v mod m + 1 (a shift
by one, so the interior labels of B are the leaves of A). The root v = 0 sits on top of both
with one child each. Transfers go level by level: H = floor(lg m) + 1 = ceil(lg p) steps down
(broadcast) or up (reduce). For p = 2 the two trees are the same edge, and the data travels
as one message.
"""

from coopsim.distributed.algorithms.schedule import Xfer, chunks, make_schedule


def _levels(p):
    """ceil(lg p): the number of binomial steps."""
    return (p - 1).bit_length()


def _binomial_reduce_steps(p, n, root):
    steps = []
    for j in range(_levels(p)):
        m = 1 << j
        steps.append([Xfer((v + root) % p, (v - m + root) % p, "out", 0, "out", 0, n, True)
                      for v in range(m, p, 2 * m)])
    return steps


def _binomial_broadcast_steps(p, n, root):
    steps = []
    for j in reversed(range(_levels(p))):
        m = 1 << j
        steps.append([Xfer((v + root) % p, (v + m + root) % p, "out", 0, "out", 0, n, False)
                      for v in range(0, p - m, 2 * m)])
    return steps


def binomial_reduce(p, n, root):
    """Binomial reduce: rank v's buffer becomes op(v's, child's) for children v+1, v+2, v+4..."""
    return make_schedule("reduce", "binomial_tree", p, _binomial_reduce_steps(p, n, root), n, n,
                         root)


def binomial_broadcast(p, n, root):
    """Binomial broadcast in ceil(lg p) steps."""
    return make_schedule("broadcast", "binomial_tree", p, _binomial_broadcast_steps(p, n, root),
                         n, n, root)


def binomial_all_reduce(p, n):
    """Binomial reduce to rank 0, then binomial broadcast from it: the result is copied, so
    every rank has the same bits."""
    steps = _binomial_reduce_steps(p, n, 0) + _binomial_broadcast_steps(p, n, 0)
    return make_schedule("all_reduce", "binomial_tree", p, steps, n, n)


def binomial_gather(p, count, root):
    """Binomial gather: at step j, every v = 2^j mod 2^(j+1) sends its block of min(2^j, p-v)
    chunks to v - 2^j, into "tmp" at offset 2^j. Step 0 also places the own chunk at "tmp"[0]
    of the ranks that receive (even v); odd v send straight from "in". Last, the root rotates
    "tmp" (relative order) into "out" (absolute order)."""
    steps = [[Xfer((v + root) % p, (v + root) % p, "in", 0, "tmp", 0, count, False)
              for v in range(0, p, 2)]]
    for j in range(_levels(p)):
        m = 1 << j
        xfers = [Xfer((v + root) % p, (v - m + root) % p, "in" if j == 0 else "tmp", 0,
                      "tmp", m * count, min(m, p - v) * count, False)
                 for v in range(m, p, 2 * m)]
        if j == 0:
            steps[0].extend(xfers)
        else:
            steps.append(xfers)
    head = (p - root) * count
    rotate = [Xfer(root, root, "tmp", 0, "out", root * count, head, False)]
    if root:
        rotate.append(Xfer(root, root, "tmp", head, "out", 0, root * count, False))
    steps.append(rotate)
    return make_schedule("gather", "binomial_tree", p, steps, count, p * count, root,
                         tmp_count=p * count)


def binomial_scatter(p, count, root):
    """Binomial scatter: the root first rotates "in" into "tmp" (relative order); then, with
    masks m = 2^(L-1) down to 1, every v = 0 mod 2m sends the block of relative ranks
    [v+m, min(v+2m, p)) to v+m: into its "out" if it is one chunk, else into its "tmp", whose
    first chunk it copies to "out" in the next step."""
    head = (p - root) * count
    setup = [Xfer(root, root, "in", root * count, "tmp", 0, head, False),
             Xfer(root, root, "in", root * count, "out", 0, count, False)]
    if root:
        setup.append(Xfer(root, root, "in", 0, "tmp", head, root * count, False))
    steps = [setup]
    pending = []
    for j in reversed(range(_levels(p))):
        m = 1 << j
        xfers, pending = pending, []
        for v in range(0, p - m, 2 * m):
            w = (v + m + root) % p
            size = min(m, p - v - m)
            xfers.append(Xfer((v + root) % p, w, "tmp", m * count,
                              "out" if size == 1 else "tmp", 0, size * count, False))
            if size > 1:
                pending.append(Xfer(w, w, "tmp", 0, "out", 0, count, False))
        steps.append(xfers)
    return make_schedule("scatter", "binomial_tree", p, steps, p * count, count, root,
                         tmp_count=p * count)


def _inorder_children(m):
    """children[x] for the in-order binary tree on labels 1..m: x with lowest set bit 2^k has
    the left child x - 2^(k-1) and, as right child, x + h for the largest power of two
    h < 2^k with x + h <= m (odd labels are leaves)."""
    children = {}
    for x in range(1, m + 1):
        half = (x & -x) >> 1
        kids = [x - half] if half else []
        h = half
        while h and x + h > m:
            h >>= 1
        if h:
            kids.append(x + h)
        children[x] = kids
    return children


def double_trees(p):
    """(edges_a, edges_b, height): each tree as (parent, child, child_depth) over relative
    ranks, parents before children, left before right; the root (0) has depth 0."""
    m = p - 1
    children = _inorder_children(m)
    top = 1 << (m.bit_length() - 1)
    by_label = [(0, top, 1)]
    for parent, label, depth in by_label:  # grows while iterating: a breadth-first walk
        by_label.extend((label, kid, depth + 1) for kid in children[label])

    def rank_b(label):  # tree B gives rank v the label v mod m + 1
        return label - 1 if label > 1 else m

    edges_b = [(rank_b(a) if a else 0, rank_b(c), d) for a, c, d in by_label]
    return by_label, edges_b, by_label[-1][2]


def _double_tree_steps(p, n, root, down):
    if p == 1:
        return []
    edges_a, edges_b, height = double_trees(p)
    halves = chunks(n, 2)
    trees = [(edges_a, halves[0]), (edges_b, halves[1])] if p > 2 else [(edges_a, (0, n))]
    steps = []
    for k in range(height):
        depth = k + 1 if down else height - k
        xfers = []
        for edges, (off, count) in trees:
            for parent, child, d in edges:
                if d == depth:
                    a, b = (parent, child) if down else (child, parent)
                    xfers.append(Xfer((a + root) % p, (b + root) % p, "out", off, "out", off,
                                      count, not down))
        steps.append(xfers)
    return steps


def double_tree_broadcast(p, n, root):
    """Double-binary-tree broadcast: H steps, each tree carrying one half."""
    return make_schedule("broadcast", "double_binary_tree", p,
                         _double_tree_steps(p, n, root, down=True), n, n, root)


def double_tree_reduce(p, n, root):
    """Double-binary-tree reduce: H steps up; a parent reduces its left child, then its right,
    and the root the tree-A half, then the tree-B half."""
    return make_schedule("reduce", "double_binary_tree", p,
                         _double_tree_steps(p, n, root, down=False), n, n, root)


def double_tree_all_reduce(p, n):
    """Double-binary-tree reduce to rank 0, then broadcast from it (2H steps)."""
    steps = _double_tree_steps(p, n, 0, down=False) + _double_tree_steps(p, n, 0, down=True)
    return make_schedule("all_reduce", "double_binary_tree", p, steps, n, n)
