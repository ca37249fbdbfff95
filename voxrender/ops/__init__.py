"""One module per op: argument checks, backend choice, autograd registration."""
