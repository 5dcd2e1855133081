"""Code that runs inside the sandbox, in the child: the standard library only.

These files are run as scripts or loaded by path in the sandboxed child
(harness, zygote, kernel launcher, minimal init, remote-kernel helpers), so
they import nothing from codeloop and nothing outside the standard library
(``restricted_policy`` also needs RestrictedPython, which the child has).
The orchestrator side may import them for their constants and framing.
"""
