// tests/fleet/KafkaAcls.java - creates ACLs through Kafka's Admin API, for
// secure_kafka.py's create_acls(): the Python Kafka client of Debian 12
// (confluent-kafka 1.7) has no ACL calls yet. Run by the JDK's source launcher with
// the broker's jars on the class path:
//   java -cp 'lib/*' KafkaAcls.java ADMIN.properties TYPE,PATTERN,NAME,PRINCIPAL,OPERATION...
// e.g. TOPIC,PREFIXED,codeq.replies.,User:client,READ (the names of Kafka's enums).
import java.io.FileInputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KafkaAcls {
    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            config.load(in);
        }
        List<AclBinding> acls = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            String[] f = args[i].split(",", 5);
            ResourcePattern resource = new ResourcePattern(ResourceType.valueOf(f[0]), f[2],
                                                           PatternType.valueOf(f[1]));
            acls.add(new AclBinding(resource, new AccessControlEntry(
                f[3], "*", AclOperation.valueOf(f[4]), AclPermissionType.ALLOW)));
        }
        try (Admin admin = Admin.create(config)) {
            admin.createAcls(acls).all().get();
        }
    }
}
