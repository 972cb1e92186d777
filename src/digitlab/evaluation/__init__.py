"""Scoring saved models: on MNIST test, on re-drawn digits, and the uncertain flag's rates."""
