"""The torch.distributed-shaped API: process groups, rendezvous and collective algorithms."""
