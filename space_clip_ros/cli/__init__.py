"""Console-script entry points: argument parsing, then a call into the library."""
