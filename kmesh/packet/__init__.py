"""Packets: tracing (nft trace, captures, conntrack), capture to pcapng, link shaping (tc netem/tbf/htb, or
kmesh's NFQUEUE delayer where the kernel has no netem).

This floor sits below ``kmesh.lab``: it knows namespaces, devices and
addresses, never a lab's names or files; the lab floor (``kmesh.lab.links``)
turns ``node-1`` or ``default/web-abc`` into the namespaces and devices these
modules take.
"""
