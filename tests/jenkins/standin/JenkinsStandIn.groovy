import groovy.json.JsonOutput
import org.jenkinsci.plugins.workflow.steps.FlowInterruptedException
import org.jenkinsci.plugins.workflow.steps.TimeoutStepExecution
import org.jenkinsci.plugins.workflow.support.steps.input.Rejection

/*
 * A STAND-IN FOR JENKINS, NOT JENKINS: a small model of the Declarative Pipeline DSL, written for the
 * tests, that the real Jenkinsfile is evaluated against by a real Groovy interpreter (Groovy 2.4, the
 * version Jenkins' CPS engine runs). It knows the sections and steps the Jenkinsfile uses and does what
 * Jenkins documents for them:
 *   - parameters become `params` and environment variables; the `environment` block adds variables;
 *   - stages run in order, a stage whose `when` is false is skipped, a failure skips the rest;
 *   - `sh` runs the script with `/bin/sh -xe` in WORKSPACE with the build's environment (a non-zero
 *     exit fails the stage); `withCredentials` binds the credentials of the scenario's store to their
 *     variables for its body, and a missing ID fails with Jenkins' message naming it;
 *   - `input` answers from the scenario: approve (returns the parameters and the submitterParameter),
 *     reject (FlowInterruptedException with a Rejection, the build ABORTED) or timeout (inside
 *     `timeout`: FlowInterruptedException with ExceededTimeout);
 *   - `post` conditions run in Jenkins' order (always, changed, fixed, regression, aborted, failure,
 *     success, unstable, unsuccessful, cleanup) after the stages; changed/fixed/regression never run
 *     (the stand-in has no previous build);
 *   - a step, binding or option given a parameter it does not have, or lacking a required one, fails as
 *     Jenkins' DescribableModel does ("WARNING: Unknown parameter(s) found for class type ..." is an
 *     IllegalArgumentException there too); the known parameters are those of the steps' documentation;
 *   - `copyArtifacts` copies the files of the scenario's `artifacts[projectName]` directory matching `filter`.
 * Everything it does is recorded as events (JSON) for the tests to assert on. It does not sandbox,
 * persist (CPS) or distribute anything.
 */
abstract class JenkinsStandIn extends Script {
    Map scenario
    Map envVars = [:]
    Map paramValues = [:]
    List events = []
    String currentStage = null
    int timeoutDepth = 0
    BuildStandIn build

    static JenkinsStandIn current

    void setUp(Map scenario) {
        current = this
        this.scenario = scenario
        envVars.putAll(scenario.env ?: [:])
        build = new BuildStandIn(number: scenario.env.BUILD_NUMBER as int, causes: scenario.causes ?: [])
    }

    // ---- what Jenkins gives a Jenkinsfile
    EnvStandIn getEnv() { new EnvStandIn(vars: envVars) }
    Map getParams() { paramValues.asImmutable() }
    BuildStandIn getCurrentBuild() { build }

    // The parameters each step/binding/option takes (Pipeline Steps Reference), the required ones first.
    static final Map SIGNATURES = [
        sh: [required: ['script'], optional: ['returnStatus', 'returnStdout', 'encoding', 'label']],
        junit: [required: ['testResults'], optional: ['allowEmptyResults', 'keepLongStdio', 'healthScaleFactor',
                'skipPublishingChecks', 'skipMarkingBuildUnstable', 'checksName', 'testDataPublishers',
                'keepProperties', 'stdioRetention']],
        archiveArtifacts: [required: ['artifacts'], optional: ['allowEmptyArchive', 'caseSensitive', 'defaultExcludes',
                'excludes', 'fingerprint', 'followSymlinks', 'onlyIfSuccessful']],
        input: [required: ['message'], optional: ['id', 'ok', 'parameters', 'submitter', 'submitterParameter']],
        timeout: [required: ['time'], optional: ['unit', 'activity']],
        copyArtifacts: [required: ['projectName'], optional: ['selector', 'filter', 'excludes', 'target', 'flatten',
                'optional', 'fingerprintArtifacts', 'resultVariableSuffix', 'includeBuildNumberInTargetPath', 'parameters']],
        'string (binding)': [required: ['credentialsId', 'variable'], optional: []],
        'usernamePassword (binding)': [required: ['credentialsId', 'usernameVariable', 'passwordVariable'], optional: []],
        'string (parameter)': [required: ['name'], optional: ['defaultValue', 'description', 'trim']],
        'choice (parameter)': [required: ['name', 'choices'], optional: ['description']],
        'booleanParam (parameter)': [required: ['name'], optional: ['defaultValue', 'description']],
        logRotator: [required: [], optional: ['numToKeepStr', 'daysToKeepStr', 'artifactNumToKeepStr', 'artifactDaysToKeepStr']],
    ]

    static Map checked(String step, Map args) {
        Map sig = SIGNATURES[step] as Map
        List unknown = args.keySet().findAll { !(it in sig.required) && !(it in sig.optional) }.collect { it as String }
        if (unknown) {
            throw new IllegalArgumentException("WARNING: Unknown parameter(s) found for class type '${step}': ${unknown.join(',')}")
        }
        List missing = sig.required.findAll { !args.containsKey(it) }
        if (missing) {
            throw new IllegalArgumentException("${step} is missing the required parameter(s): ${missing.join(',')}")
        }
        return args
    }

    void record(Map event) {
        events << ([stage: currentStage] + event)
    }

    // ---- declarative sections
    def pipeline(Closure body) {
        PipelineSpec spec = new PipelineSpec(script: this)
        with(spec, body)
        spec.run()
    }

    static def with(Object delegate, Closure body) {
        Closure c = body.rehydrate(delegate, body.owner, body.thisObject)
        c.resolveStrategy = Closure.DELEGATE_FIRST
        return c.call()
    }

    // ---- steps
    def sh(String script) { sh(script: script) }

    def sh(Map args) {
        checked('sh', args)
        File workspace = new File(envVars.WORKSPACE as String)
        workspace.mkdirs()
        ProcessBuilder pb = new ProcessBuilder(['/bin/sh', '-xe', '-c', args.script as String])
        pb.directory(workspace)
        pb.environment().clear()
        envVars.each { k, v -> if (v != null) { pb.environment().put(k as String, v as String) } }
        pb.redirectErrorStream(true)
        Process proc = pb.start()
        proc.outputStream.close()
        StringBuilder out = new StringBuilder()
        proc.inputStream.eachLine('UTF-8') { line ->
            out.append(line).append('\n')
            println "[${currentStage}] ${line}"
        }
        long limit = (scenario.sh_timeout_s ?: 300) as long
        if (!proc.waitFor(limit, java.util.concurrent.TimeUnit.SECONDS)) {
            proc.destroyForcibly()
            throw new StepFailure("sh did not finish within ${limit} s")
        }
        int status = proc.exitValue()
        record(type: 'sh', script: args.script, status: status, output: out.toString())
        if (args.returnStatus) { return status }
        if (status != 0) { throw new StepFailure("script returned exit code ${status}") }
        return args.returnStdout ? out.toString() : null
    }

    def script(Closure body) { body.call() }

    def echo(String message) { println "[${currentStage}] ${message}"; record(type: 'echo', message: message) }

    def error(String message) { throw new StepFailure(message) }

    def junit(Map args) {
        checked('junit', args)
        record(type: 'junit', testResults: args.testResults, files: glob(args.testResults as String))
    }

    def archiveArtifacts(Map args) {
        checked('archiveArtifacts', args)
        List patterns = (args.artifacts as String).split(',').collect { it.trim() }
        record(type: 'archive', patterns: patterns, files: patterns.collectMany { glob(it) }.unique().sort())
    }

    List glob(String pattern) {
        File root = new File(envVars.WORKSPACE as String)
        def matcher = java.nio.file.FileSystems.default.getPathMatcher("glob:${pattern}")
        List found = []
        if (!root.exists()) { return found }
        root.eachFileRecurse(groovy.io.FileType.FILES) { File f ->
            def rel = root.toPath().relativize(f.toPath())
            if (matcher.matches(rel)) { found << rel.toString() }
        }
        return found.sort()
    }

    // credential bindings and build parameters share the name `string`, as in Jenkins
    Map string(Map args) {
        if (args.containsKey('credentialsId')) { return [binding: 'string'] + checked('string (binding)', args) }
        return [param: 'string'] + checked('string (parameter)', args)
    }

    Map usernamePassword(Map args) { [binding: 'usernamePassword'] + checked('usernamePassword (binding)', args) }

    // the copyartifact plugin's build selectors
    Map lastSuccessful() { [selector: 'lastSuccessful'] }

    Map lastCompleted() { [selector: 'lastCompleted'] }

    def copyArtifacts(Map args) {
        checked('copyArtifacts', args)
        File from = new File(((scenario.artifacts ?: [:])[args.projectName] ?: '/nonexistent') as String)
        File root = new File(envVars.WORKSPACE as String)
        List copied = []
        if (from.isDirectory()) {
            def matcher = java.nio.file.FileSystems.default.getPathMatcher("glob:${args.filter ?: '**'}")
            from.eachFileRecurse(groovy.io.FileType.FILES) { File f ->
                def rel = from.toPath().relativize(f.toPath())
                if (matcher.matches(rel)) {
                    File to = new File(root, rel.toString())
                    to.parentFile.mkdirs()
                    to.bytes = f.bytes
                    copied << rel.toString()
                }
            }
        }
        record(type: 'copyArtifacts', projectName: args.projectName, selector: args.selector, files: copied.sort())
        if (!copied && !args.optional) {
            throw new StepFailure("Unable to find a build for artifact copy from: ${args.projectName}")
        }
    }

    def withCredentials(List bindings, Closure body) {
        Map store = scenario.credentials ?: [:]
        Map bound = [:]
        for (Map b in bindings) {
            if (!(b instanceof Map) || !(b.binding in ['string', 'usernamePassword'])) {
                throw new IllegalArgumentException("withCredentials takes credential bindings (string, usernamePassword), not ${b}")
            }
            Map cred = store[b.credentialsId] as Map
            if (cred == null) {
                record(type: 'credentials', missing: b.credentialsId)
                throw new StepFailure("Could not find credentials entry with ID '${b.credentialsId}'")
            }
            if (b.binding == 'string') {
                if (cred.type != 'secret') { throw new StepFailure("Credentials '${b.credentialsId}' is of type '${cred.type}' where 'org.jenkinsci.plugins.plaincredentials.StringCredentials' was expected") }
                bound[b.variable] = cred.secret
            } else {
                if (cred.type != 'usernamePassword') { throw new StepFailure("Credentials '${b.credentialsId}' is of type '${cred.type}' where 'com.cloudbees.plugins.credentials.common.StandardUsernamePasswordCredentials' was expected") }
                bound[b.usernameVariable] = cred.username
                bound[b.passwordVariable] = cred.password
            }
        }
        record(type: 'credentials', bound: bound.keySet().sort())
        Map saved = bound.keySet().collectEntries { [(it): envVars[it]] }
        envVars.putAll(bound)
        try {
            return body.call()
        } finally {
            saved.each { k, v -> if (v == null) { envVars.remove(k) } else { envVars[k] = v } }
        }
    }

    def timeout(Map args, Closure body) {
        checked('timeout', args)
        timeoutDepth++
        try {
            return body.call()
        } finally {
            timeoutDepth--
        }
    }

    def input(Map args) {
        checked('input', args)
        (args.parameters ?: []).each { p ->
            if (!(p instanceof Map) || !p.param) { throw new IllegalArgumentException("input parameters are parameter definitions, not ${p}") }
        }
        Map answer = scenario.input ?: [answer: 'none']
        record(type: 'input', id: args.id, message: args.message, submitter: args.submitter,
               submitterParameter: args.submitterParameter, parameters: (args.parameters ?: []).collect { it.name },
               answer: answer.answer)
        switch (answer.answer) {
            case 'approve':
                Map result = [:]
                (args.parameters ?: []).each { p -> result[p.name] = (answer.values ?: [:])[p.name] ?: p.defaultValue }
                if (args.submitterParameter) { result[args.submitterParameter] = answer.user }
                // as Jenkins: one value alone comes back as itself, several (or a submitter) as a map
                return result.size() == 1 ? result.values()[0] : result
            case 'reject':
                throw new FlowInterruptedException('ABORTED', new Rejection(answer.user as String))
            case 'timeout':
                if (timeoutDepth == 0) { throw new StepFailure('input without a timeout would wait forever') }
                throw new FlowInterruptedException('ABORTED', new TimeoutStepExecution.ExceededTimeout())
            default:
                throw new StepFailure("the scenario has no answer for input ${args.id}")
        }
    }
}

class StepFailure extends RuntimeException {
    StepFailure(String message) { super(message) }
}

class EnvStandIn {
    Map vars

    def propertyMissing(String name) { vars[name] }

    def propertyMissing(String name, Object value) { vars[name] = value == null ? null : value.toString() }
}

class BuildStandIn {
    int number
    String result = null
    List causes = []

    String getCurrentResult() { result ?: 'SUCCESS' }

    List getBuildCauses(String className) {
        causes.findAll { it._class == className }
    }
}

class PipelineSpec {
    JenkinsStandIn script
    Map agentSpec = [:]
    Map options = [:]
    List stageSpecs = []
    Map post = [:]

    def agent(Closure body) { JenkinsStandIn.with(new AgentSpec(spec: agentSpec), body) }

    def parameters(Closure body) {
        ParamsSpec params = new ParamsSpec()
        JenkinsStandIn.with(params, body)
        params.declared.each { p ->
            String given = (script.scenario.params ?: [:])[p.name]
            String value = given != null ? given : p.defaultValue
            if (p.trim && value != null) { value = value.trim() }
            script.paramValues[p.name] = value
            script.envVars[p.name] = value   // Jenkins exposes parameters as environment variables
        }
        script.record(type: 'parameters', names: params.declared.collect { it.name })
    }

    def options(Closure body) { JenkinsStandIn.with(new OptionsSpec(options: options), body) }

    def environment(Closure body) {
        EnvBlock block = new EnvBlock()
        JenkinsStandIn.with(block, body)
        script.envVars.putAll(block.values)
    }

    def stages(Closure body) { JenkinsStandIn.with(new StagesSpec(list: stageSpecs), body) }

    def post(Closure body) { JenkinsStandIn.with(new PostSpec(blocks: post), body) }

    void run() {
        script.record(type: 'pipeline', agent: agentSpec, options: options.keySet().sort())
        if (script.scenario.declare_only) { return }   // tests reading the declarations only: no stage runs
        Throwable failure = null
        for (StageSpec st in stageSpecs) {
            script.setCurrentStage(st.name)
            if (failure != null) {
                script.record(type: 'stage', status: 'skipped (an earlier stage failed)')
                continue
            }
            if (st.when != null && !st.when.evaluate()) {
                script.record(type: 'stage', status: 'skipped (when)')
                continue
            }
            String status = 'SUCCESS'
            try {
                st.steps.call()
            } catch (FlowInterruptedException e) {
                status = 'ABORTED'
                failure = e
            } catch (Exception e) {
                status = 'FAILURE'
                failure = e
                println "[${st.name}] ERROR: ${e.message}"
            }
            if (failure != null) { script.build.result = status }
            runPost(st.post, status)
            script.record(type: 'stage', status: status, error: failure?.message)
        }
        script.setCurrentStage(null)
        String result = script.build.currentResult
        runPost(post, result)
        script.record(type: 'result', result: script.build.currentResult)
    }

    void runPost(Map blocks, String result) {
        Map applies = [always: true, changed: false, fixed: false, regression: false, aborted: result == 'ABORTED',
                       failure: result == 'FAILURE', success: result == 'SUCCESS', unstable: result == 'UNSTABLE',
                       unsuccessful: result != 'SUCCESS', cleanup: true]
        for (String condition in PostSpec.ORDER) {
            if (blocks[condition] == null || !applies[condition]) { continue }
            script.record(type: 'post', condition: condition)
            try {
                (blocks[condition] as Closure).call()
            } catch (Exception e) {
                println "[post ${condition}] ERROR: ${e.message}"
                script.record(type: 'post-error', condition: condition, error: e.message)
                if (script.build.currentResult == 'SUCCESS') { script.build.result = 'FAILURE' }
            }
        }
    }
}

class AgentSpec {
    Map spec

    def label(String value) { spec.label = value }

    def kubernetes(Closure body) { spec.kubernetes = true }
}

class ParamsSpec {
    List declared = []

    def string(Map args) { declared << JenkinsStandIn.checked('string (parameter)', args) }

    def booleanParam(Map args) { declared << JenkinsStandIn.checked('booleanParam (parameter)', args) }

    def choice(Map args) {
        JenkinsStandIn.checked('choice (parameter)', args)
        List choices = args.choices instanceof String ? (args.choices as String).split('\n') as List : args.choices as List
        declared << ([defaultValue: choices[0]] + args)
    }
}

class OptionsSpec {
    Map options

    def timeout(Map args) { options.timeout = JenkinsStandIn.checked('timeout', args) }

    def timestamps() { options.timestamps = true }

    def disableConcurrentBuilds() { options.disableConcurrentBuilds = true }

    def copyArtifactPermission(String projects) { options.copyArtifactPermission = projects }

    Map logRotator(Map args) { [logRotator: JenkinsStandIn.checked('logRotator', args)] }

    def buildDiscarder(Map strategy) { options.buildDiscarder = strategy }
}

class EnvBlock {
    Map values = [:]

    def propertyMissing(String name, Object value) { values[name] = value.toString() }

    def propertyMissing(String name) {
        if (values.containsKey(name)) { return values[name] }
        throw new MissingPropertyException(name, EnvBlock)
    }
}

class StagesSpec {
    List list

    def stage(String name, Closure body) {
        StageSpec st = new StageSpec(name: name)
        JenkinsStandIn.with(st, body)
        list << st
    }
}

class StageSpec {
    String name
    Closure steps
    WhenSpec when
    Map post = [:]

    def steps(Closure body) { steps = body }

    def when(Closure body) {
        when = new WhenSpec(body: body)
    }

    def post(Closure body) { JenkinsStandIn.with(new PostSpec(blocks: post), body) }
}

class WhenSpec {
    Closure body
    List conditions = []

    boolean evaluate() {
        conditions = []
        JenkinsStandIn.with(this, body)
        return conditions.every { it }
    }

    def expression(Closure c) { conditions << (c.call() as boolean) }

    def environment(Map args) {
        conditions << (JenkinsStandIn.current.envVars[args.name] == args.value)
    }

    def not(Closure c) {
        WhenSpec inner = new WhenSpec(body: c)
        conditions << !inner.evaluate()
    }
}

class PostSpec {
    static final List ORDER = ['always', 'changed', 'fixed', 'regression', 'aborted', 'failure', 'success', 'unstable',
                               'unsuccessful', 'cleanup']
    Map blocks

    def changed(Closure c) { blocks.changed = c }

    def fixed(Closure c) { blocks.fixed = c }

    def regression(Closure c) { blocks.regression = c }

    def unstable(Closure c) { blocks.unstable = c }

    def unsuccessful(Closure c) { blocks.unsuccessful = c }

    def always(Closure c) { blocks.always = c }

    def success(Closure c) { blocks.success = c }

    def failure(Closure c) { blocks.failure = c }

    def aborted(Closure c) { blocks.aborted = c }

    def cleanup(Closure c) { blocks.cleanup = c }
}
