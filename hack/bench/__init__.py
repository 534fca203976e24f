"""hack/bench.sh's benchmark: converge side by side with its peers (see main.py)."""
