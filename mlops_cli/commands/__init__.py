"""The `mlops` subcommands, one module per group; each registers its commands on the root group in
mlops_cli.cli, which imports them all. Thin: parse options, call one library function, emit its result."""
