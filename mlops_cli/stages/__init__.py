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

MODULES = {  # stage name -> module (module names don't end in _test: tools would take them for test files)
    "unit-test": "mlops_cli.stages.unit_tests",
    "validate-model": "mlops_cli.stages.validate_model",
    "assemble-server": "mlops_cli.stages.assemble_server",
    "build-image": "mlops_cli.stages.build_image",
    "deploy-test": "mlops_cli.stages.deploy_to_test_env",
    "smoke-test": "mlops_cli.stages.smoke",
    "rolling-update": "mlops_cli.stages.rolling_update",
}
