"""Integer IR: op set, graph, serialization, validator."""
