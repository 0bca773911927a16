// Job DSL: the rollback pipeline job (deploy/jenkins/Jenkinsfile.rollback), started by the Slack service's
// `rollback prod` (chatops.jenkins.rollback_job: mlops-rollback) or by hand. Loaded by casc.yaml's `jobs:`.
// Its parameters are declared here too so that the very first build (and the Slack trigger) has them.
pipelineJob('mlops-rollback') {
    displayName('mlops rollback')
    description('Run an environment\'s previous revision again (mlops rollback --env ENV), with the release ' +
        'job\'s last successful state. Set-up: deploy/jenkins/README.md')
    properties {
        disableConcurrentBuilds()
    }
    logRotator {
        numToKeep(100)
        artifactNumToKeep(30)
    }
    parameters {
        choiceParam('ENV', ['prod', 'test'], 'The environment to roll back')
        stringParam('REQUESTED_BY', '', 'Who asks for the rollback, e.g. slack:U123; empty: you')
        stringParam('SLACK_CHANNEL', '', 'Slack channel the request came from')
        stringParam('SLACK_THREAD_TS', '', 'Slack thread the request came from, the ts of its first message')
        stringParam('AGENT_LABEL', 'mlops-agent', 'Agent label: mlops-agent is the Kubernetes pod template')
    }
    definition {
        cpsScm {
            scm {
                git {
                    remote {
                        url(System.getenv('MLOPS_REPO_URL') ?: 'https://git.example.com/ml/mlops.git')
                        credentials('mlops-git')
                    }
                    branch('*/main')
                }
            }
            scriptPath('deploy/jenkins/Jenkinsfile.rollback')
            lightweight(true)
        }
    }
}
