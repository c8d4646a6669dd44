"""Leaving a distributed run cleanly."""

from __future__ import annotations


def end_process_group() -> None:
    """Wait for every process of the run, then destroy the default process group (a no-op outside one).

    Call it once the process has no more collectives to run, at the end of a command. A process that
    exits with the group alive leaves gloo's worker threads holding tensors while the interpreter
    shuts down, and releasing them then can abort the process (SIGABRT) after its work is done; the
    launcher then reports the whole run as failed. The barrier keeps one process from tearing its
    connections down while another still reads the last collective's data.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
