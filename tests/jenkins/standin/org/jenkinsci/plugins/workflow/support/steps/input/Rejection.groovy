package org.jenkinsci.plugins.workflow.support.steps.input

// Stand-in (tests only): the cause the input step gives when someone rejects (aborts) it; getUser().getId().
class Rejection {
    final Map user

    Rejection(String userId) { this.user = userId ? [id: userId] : null }

    Map getUser() { user }

    String getShortDescription() { "Rejected by ${user?.id}" }
}
