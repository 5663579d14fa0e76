//! kiln: the compiler driver library behind the `kiln` command-line tool.
