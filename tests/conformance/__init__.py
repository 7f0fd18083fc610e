"""Checkers for the reference fixtures (see tests/test_reference.py).

A function-fixture checker is ``check(fixture, arrays, case)``: ``fixture`` is the parsed
``functions/NAME.json``, ``arrays`` the ``NAME.npz`` contents and ``case`` the case index;
it reads ``case{case}_<argument>`` arrays, calls jaxpose's own function and asserts every
``case{case}_<result>`` array. Checkers must not assume how many cases exist or which
parameters they use: other fixtures of the same functions are run through them.
"""
