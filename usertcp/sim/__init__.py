"""Simulation in virtual time: a Linux-like TCP receiver, one-way links, and the loop that
drives a sender engine against them (see DESIGN.md, "tests run it in virtual time")."""

from .link import Link, options_len, segments_from, wire_size
from .receiver import Receiver
from .run import SimResult, simulate

__all__ = ["Link", "Receiver", "SimResult", "options_len", "segments_from", "simulate", "wire_size"]
