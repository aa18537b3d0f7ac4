"""The review workspace: a web app where people sign in, follow their jobs, and read, judge and
export conversations. It is another face of `service/` beside `starter.py`: its routes call the
same service functions and hold no rule of their own. `python -m web` serves it."""
