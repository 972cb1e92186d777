"""The not-a-digit detector at serving time: features, the numpy MLP and the `uncertain` rule.

Imports no synthesis or training code: API workers load only this.
"""
