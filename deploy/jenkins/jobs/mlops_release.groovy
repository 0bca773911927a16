// Job DSL: the release pipeline job, from the repository's Jenkinsfile (loaded by casc.yaml's `jobs:`).
// The parameters themselves come from the Jenkinsfile (its first run registers them); they are declared
// here too so that "Build with Parameters" and the Slack trigger work from the very first build.
pipelineJob('mlops-release') {
    displayName('mlops release')
    description('Validate, package, test and roll out a model; production needs an approval ' +
        '(input ReleaseApproval, approvers: RELEASE_APPROVERS). Set-up: deploy/jenkins/README.md')
    properties {
        disableConcurrentBuilds()
    }
    logRotator {
        numToKeep(100)
        artifactNumToKeep(30)
    }
    parameters {
        stringParam('MODEL_REF', '', 'Model reference: local:NAME[@VERSION], clearml:MODEL_ID or s3://BUCKET/PREFIX')
        stringParam('TARGET', '', 'Deploy target: local, container or kubernetes; empty: the configured one')
        stringParam('REQUESTED_BY', '', 'Who asks for this release, e.g. slack:U123; empty: you')
        stringParam('SLACK_CHANNEL', '', 'Slack channel for the results; empty: configured notifiers')
        stringParam('SLACK_THREAD_TS', '', 'Slack thread for the results, the ts of its first message')
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
            scriptPath('Jenkinsfile')
            lightweight(true)
        }
    }
}
