"""Small Warp kernels of the newton engine (a module of its own: Warp reads the annotations, and
this package imports warp only when the newton engine is built)."""
import warp as wp


@wp.kernel
def or_into(acc: wp.array(dtype=wp.int32), bits: wp.array(dtype=wp.int32)):
    """``acc[i] |= bits[i]``: gathers per-world flags that the solver clears before every step."""
    i = wp.tid()
    acc[i] = acc[i] | bits[i]
