"""Tools around the networks: the memory/time planner, benchmarks, pictures, transforms."""
