"""One module per pipeline stage: `run(settings) -> Result`. The CLI only calls these."""

STAGES = (
    "unit-test",
    "validate-model",
    "assemble-server",
    "build-image",
    "deploy-test",
    "smoke-test",
    "rolling-update",
)

MODULES = {name: "mlops_cli.stages." + name.replace("-", "_") for name in STAGES}
