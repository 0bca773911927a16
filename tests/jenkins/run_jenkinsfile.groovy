// Runs a Jenkinsfile against the stand-in of the Declarative Pipeline DSL (standin/JenkinsStandIn.groovy):
//   groovyc -d CLASSES tests/jenkins/standin/**/*.groovy && groovy -cp CLASSES tests/jenkins/run_jenkinsfile.groovy SCENARIO.json EVENTS.json
// A stand-in for Jenkins, not Jenkins: see JenkinsStandIn.groovy for what it models.
import groovy.json.JsonOutput
import groovy.json.JsonSlurper
import org.codehaus.groovy.control.CompilerConfiguration

Map scenario = new JsonSlurper().parse(new File(args[0])) as Map
CompilerConfiguration config = new CompilerConfiguration()
config.scriptBaseClass = 'JenkinsStandIn'
GroovyShell shell = new GroovyShell(this.class.classLoader, new Binding(), config)
def jenkinsfile = shell.parse(new File(scenario.jenkinsfile as String))
jenkinsfile.setUp(scenario)
Throwable crashed = null
try {
    jenkinsfile.run()
} catch (Throwable t) {
    crashed = t
    t.printStackTrace()
}
new File(args[1]).text = JsonOutput.toJson([events: jenkinsfile.events, params: jenkinsfile.paramValues,
                                            crashed: crashed?.toString()])
System.exit(crashed == null ? 0 : 1)
