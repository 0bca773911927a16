package org.jenkinsci.plugins.workflow.steps

// Stand-in (tests only) of the Pipeline exception Jenkins throws when a step is interrupted: an input
// rejected, a timeout exceeded, a build aborted. Same package, name and getCauses() as the real class.
class FlowInterruptedException extends InterruptedException {
    final String result
    final List causes

    FlowInterruptedException(String result, Object... causes) {
        super(result)
        this.result = result
        this.causes = causes as List
    }

    List getCauses() { causes }
}
