// Validates XML files against an XML Schema with the JDK's own validator (javax.xml.validation):
//   groovy tests/jenkins/validate_xml.groovy SCHEMA.xsd FILE.xml...
// Prints "ok FILE" or "invalid FILE: line L: message" per file; exits 1 when any is invalid.
import javax.xml.XMLConstants
import javax.xml.transform.stream.StreamSource
import javax.xml.validation.SchemaFactory
import org.xml.sax.SAXParseException

def schema = SchemaFactory.newInstance(XMLConstants.W3C_XML_SCHEMA_NS_URI).newSchema(new File(args[0]))
int bad = 0
args.drop(1).each { String path ->
    try {
        schema.newValidator().validate(new StreamSource(new File(path)))
        println "ok ${path}"
    } catch (SAXParseException e) {
        bad++
        println "invalid ${path}: line ${e.lineNumber}: ${e.message}"
    }
}
System.exit(bad ? 1 : 0)
