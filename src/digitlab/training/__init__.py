"""Building models: the classical models, the CNN (torch) and the not-a-digit detector.

Runs in its own process (`digitlab train`), never inside an API worker.
"""
