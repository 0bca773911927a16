package org.jenkinsci.plugins.workflow.steps

// Stand-in (tests only): the cause the timeout step gives when its time is up.
class TimeoutStepExecution {
    static class ExceededTimeout {
        String getShortDescription() { 'Timeout has been exceeded' }
    }
}
