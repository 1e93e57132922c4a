"""The template's own rules, beyond what cfn-lint knows: least privilege,
the configuration secret readable by every function, and authentication on
every route. Each check returns the violations it found, as sentences."""

import copy
import json
import os
import re

from cfnlint.decode import decode_str

# The one route without API Gateway authentication: Dataverse webhooks can
# only send a header, which this function checks against the shared key.
HEADER_CHECKED_ROUTES = {"/dynamics": "dynamics-to-didomi"}


def load(path):
    with open(path, encoding="utf-8") as f:
        template, errors = decode_str(f.read())
    if errors:
        raise ValueError(f"{path} does not parse: {errors}")
    return template


def resources(template, kind):
    return {
        name: resource
        for name, resource in template.get("Resources", {}).items()
        if resource.get("Type") == kind
    }


def as_list(value):
    return value if isinstance(value, list) else [value]


def unconditional(items):
    """A statement list with each `Fn::If` replaced by its branches (a
    conditional grant counts as granted)."""
    found = []
    for item in items:
        if isinstance(item, dict) and "Fn::If" in item:
            found += [b for b in item["Fn::If"][1:] if isinstance(b, dict) and "Effect" in b]
        else:
            found.append(item)
    return found


def statements(template):
    """(where, statement) for every IAM statement the template grants."""
    found = []
    for name, function in resources(template, "AWS::Serverless::Function").items():
        for index, policy in enumerate(function.get("Properties", {}).get("Policies", []) or []):
            where = f"{name}.Policies[{index}]"
            if isinstance(policy, dict) and "Statement" in policy:
                found += [(where, s) for s in unconditional(as_list(policy["Statement"]))]
            else:
                # A managed policy or SAM policy template grants what it names.
                found.append((where, {"Effect": "Allow", "Action": "*", "Resource": "*", "Managed": policy}))
    for kind in ("AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for name, resource in resources(template, kind).items():
            properties = resource.get("Properties", {})
            documents = [properties.get("PolicyDocument")] + [
                p.get("PolicyDocument") for p in properties.get("Policies", []) or []
            ]
            for document in filter(None, documents):
                found += [(name, s) for s in unconditional(as_list(document.get("Statement", [])))]
    return found


def wildcards(template):
    """An Action or Resource with `*` in it: every grant here names its target."""
    violations = []
    for where, statement in statements(template):
        if statement.get("Effect") != "Allow":
            continue
        if "Managed" in statement:
            violations.append(f"{where}: managed policy {statement['Managed']!r} instead of a named statement")
            continue
        for field in ("Action", "Resource", "NotAction", "NotResource"):
            for value in as_list(statement.get(field, [])):
                if isinstance(value, str) and "*" in value:
                    violations.append(f"{where}: {field} {value!r} is a wildcard")
    return violations


def secret_expression(template):
    globals_env = template.get("Globals", {}).get("Function", {}).get("Environment", {})
    return globals_env.get("Variables", {}).get("CONFIG_SECRET_ID")


def function_statements(template, name):
    """The statements that function `name` is granted: its own Policies and
    those of the role it names."""
    function = template["Resources"][name]
    found = [s for _, s in statements({"Resources": {name: function}})]
    role = function.get("Properties", {}).get("Role")
    if isinstance(role, dict) and "Fn::GetAtt" in role:
        role_name = role["Fn::GetAtt"][0]
        role_resource = template.get("Resources", {}).get(role_name)
        if role_resource:
            found += [s for _, s in statements({"Resources": {role_name: role_resource}})]
    return found


def grants(template, name, action, resource):
    return [
        s
        for s in function_statements(template, name)
        if s.get("Effect") == "Allow"
        and action in as_list(s.get("Action", []))
        and resource in as_list(s.get("Resource", []))
    ]


def variable(template, function, name):
    own = function.get("Properties", {}).get("Environment", {}).get("Variables", {}).get(name)
    globals_env = template.get("Globals", {}).get("Function", {}).get("Environment", {})
    return own or globals_env.get("Variables", {}).get(name)


def secret_access(template):
    """Every function has CONFIG_SECRET_ID and may read exactly that secret."""
    violations = []
    for name, function in resources(template, "AWS::Serverless::Function").items():
        secret = variable(template, function, "CONFIG_SECRET_ID")
        if secret is None:
            violations.append(f"{name}: no CONFIG_SECRET_ID")
            continue
        if not grants(template, name, "secretsmanager:GetSecretValue", secret):
            violations.append(f"{name}: no secretsmanager:GetSecretValue on its configuration secret")
    return violations


# What draining its own parked queue takes, and nothing more.
QUEUE_ACTIONS = [
    "sqs:SendMessage",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
]


def max_receive_count():
    """The redrive count the functions' retry delays are computed for."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "src", "parking", "drain.rs")
    with open(path, encoding="utf-8") as f:
        match = re.search(r"pub(?:\(crate\))? const MAX_RECEIVE_COUNT: u32 = (\d+);", f.read())
    return int(match.group(1))


def answers_webhooks(function):
    events = (function.get("Properties", {}).get("Events", {}) or {}).values()
    return any(e.get("Type") == "HttpApi" for e in events)


def queue_access(template):
    """Every webhook function parks in its own queue (PARKED_QUEUE_URL) and drains
    it: the five queue actions on that queue, an SQS event source on it
    with partial batch answers and a concurrency cap, a visibility timeout
    of at least six times the function's timeout, and a dead-letter queue
    reached after the receive count the retry delays are made for."""
    violations = []
    timeout_default = template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    owners = {}
    for name, function in resources(template, "AWS::Serverless::Function").items():
        if not answers_webhooks(function):
            continue
        queue = variable(template, function, "PARKED_QUEUE_URL")
        if not (isinstance(queue, dict) and "Ref" in queue):
            violations.append(f"{name}: no parked queue of its own (PARKED_QUEUE_URL)")
            continue
        queue_name = queue["Ref"]
        if queue_name in owners:
            violations.append(f"{name}: shares its parked queue with {owners[queue_name]}")
        owners[queue_name] = name
        arn = {"Fn::GetAtt": [queue_name, "Arn"]}
        for action in QUEUE_ACTIONS:
            if not grants(template, name, action, arn):
                violations.append(f"{name}: no {action} on its parked queue")
        events = [
            e.get("Properties", {})
            for e in (function.get("Properties", {}).get("Events", {}) or {}).values()
            if e.get("Type") == "SQS"
        ]
        if not any(e.get("Queue") == arn for e in events):
            violations.append(f"{name}: no SQS event source on its parked queue")
        for event in events:
            if "ReportBatchItemFailures" not in as_list(event.get("FunctionResponseTypes", [])):
                violations.append(f"{name}: its SQS event source does not take partial batch answers")
            if "MaximumConcurrency" not in event.get("ScalingConfig", {}):
                violations.append(f"{name}: its SQS event source has no maximum concurrency")
        properties = template["Resources"].get(queue_name, {}).get("Properties", {})
        timeout = function.get("Properties", {}).get("Timeout", timeout_default)
        if properties.get("VisibilityTimeout", 30) < 6 * timeout:
            violations.append(f"{name}: its parked queue's visibility timeout is under six times the function's timeout")
        redrive = properties.get("RedrivePolicy", {})
        if not redrive.get("deadLetterTargetArn"):
            violations.append(f"{name}: its parked queue has no dead-letter queue")
        elif redrive.get("maxReceiveCount") != max_receive_count():
            violations.append(
                f"{name}: its parked queue's maxReceiveCount is not the {max_receive_count()} the retry delays are made for"
            )
    return violations


def own_roles(template):
    """Every function has its own role without managed policies (SAM's
    generated role carries AWSLambdaBasicExecutionRole, every log group, and
    with an SQS event AWSLambdaSQSQueueExecutionRole, every queue), and may
    write to its own log group."""
    violations = []
    roles = {}
    for name, function in resources(template, "AWS::Serverless::Function").items():
        properties = function.get("Properties", {})
        role = properties.get("Role")
        if not (isinstance(role, dict) and "Fn::GetAtt" in role):
            violations.append(f"{name}: no role of its own (SAM would attach AWS managed policies)")
            continue
        role_name = role["Fn::GetAtt"][0]
        if role_name in roles:
            violations.append(f"{name}: shares its role with {roles[role_name]}")
        roles[role_name] = name
        role_properties = template["Resources"].get(role_name, {}).get("Properties", {})
        if role_properties.get("ManagedPolicyArns"):
            violations.append(f"{role_name}: managed policies")
        log_group = properties.get("LoggingConfig", {}).get("LogGroup")
        if not (isinstance(log_group, dict) and "Ref" in log_group):
            violations.append(f"{name}: no log group of its own")
            continue
        arn = {"Fn::GetAtt": [log_group["Ref"], "Arn"]}
        for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
            if not grants(template, name, action, arn):
                violations.append(f"{name}: no {action} on its log group")
    return violations


def alarms_on(template, metric, queue):
    return [
        (name, alarm.get("Properties", {}))
        for name, alarm in resources(template, "AWS::CloudWatch::Alarm").items()
        if alarm.get("Properties", {}).get("MetricName") == metric
        and {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}
        in alarm.get("Properties", {}).get("Dimensions", [])
    ]


def queue_alarms(template):
    """A person is called when a dead-letter queue holds a record and when a
    parked record is older than an hour; every alarm notifies a topic that
    CloudWatch can publish to (not one encrypted with the AWS managed SNS
    key, whose policy does not let CloudWatch use it)."""
    violations = []
    for name, queue in resources(template, "AWS::SQS::Queue").items():
        redrive = queue.get("Properties", {}).get("RedrivePolicy")
        if redrive:
            dead_letter = redrive.get("deadLetterTargetArn", {}).get("Fn::GetAtt", [None])[0]
            if not alarms_on(template, "ApproximateNumberOfMessagesVisible", dead_letter):
                violations.append(f"{dead_letter}: no alarm while it holds a record")
            ages = alarms_on(template, "ApproximateAgeOfOldestMessage", name)
            if not any(p.get("Threshold", 1e9) <= 3600 for _, p in ages):
                violations.append(f"{name}: no alarm when its oldest record is older than an hour")
    topics = resources(template, "AWS::SNS::Topic")
    for name, alarm in resources(template, "AWS::CloudWatch::Alarm").items():
        actions = as_list(alarm.get("Properties", {}).get("AlarmActions", []))
        if not actions:
            violations.append(f"{name}: notifies no one")
        for action in actions:
            topic = topics.get(action.get("Ref")) if isinstance(action, dict) else None
            if topic is None:
                violations.append(f"{name}: notifies something other than the stack's topic")
            elif str(topic.get("Properties", {}).get("KmsMasterKeyId", "")).startswith("alias/aws/"):
                violations.append(f"{name}: its topic uses an AWS managed key CloudWatch cannot publish with")
    return violations


def route_auth(template):
    """Every HTTP API has a JWT default authorizer; only the header-checked
    route opts out, and it leads to the function that checks the header."""
    violations = []
    for name, api in resources(template, "AWS::Serverless::HttpApi").items():
        auth = api.get("Properties", {}).get("Auth", {})
        default = auth.get("DefaultAuthorizer")
        authorizer = auth.get("Authorizers", {}).get(default, {}) if default else {}
        if not authorizer.get("JwtConfiguration"):
            violations.append(f"{name}: no JWT DefaultAuthorizer")
    for name, function in resources(template, "AWS::Serverless::Function").items():
        binary = function.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        for event_name, event in (function.get("Properties", {}).get("Events", {}) or {}).items():
            if event.get("Type") != "HttpApi":
                continue
            properties = event.get("Properties", {})
            path = properties.get("Path")
            authorizer = properties.get("Auth", {}).get("Authorizer")
            if authorizer == "NONE" and HEADER_CHECKED_ROUTES.get(path) != binary:
                violations.append(f"{name}.{event_name}: route {path} has no authentication")
            if "ApiId" not in properties:
                violations.append(f"{name}.{event_name}: route {path} is on an implicit API without the authorizer")
    return violations


# Where each kind of resource names its KMS key.
KMS_PROPERTY = {
    "AWS::SecretsManager::Secret": "KmsKeyId",
    "AWS::SQS::Queue": "KmsMasterKeyId",
    "AWS::Logs::LogGroup": "KmsKeyId",
    "AWS::SNS::Topic": "KmsMasterKeyId",
}
WITH_THE_KEY = {"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AWS::NoValue"}]}


def customer_key(template):
    """With KmsKeyArn given, every secret, queue, log group and topic of the
    stack is encrypted with that key."""
    violations = []
    for kind, field in KMS_PROPERTY.items():
        for name, resource in resources(template, kind).items():
            if resource.get("Properties", {}).get(field) != WITH_THE_KEY:
                violations.append(f"{name}: {field} does not name KmsKeyArn when it is given")
    return violations


def access_logs(template):
    """Every HTTP API logs each request to a log group of the stack, as JSON,
    never a body or a header."""
    violations = []
    for name, api in resources(template, "AWS::Serverless::HttpApi").items():
        settings = api.get("Properties", {}).get("AccessLogSettings", {})
        destination = settings.get("DestinationArn", {})
        group = destination.get("Fn::GetAtt", [None])[0] if isinstance(destination, dict) else None
        if template.get("Resources", {}).get(group, {}).get("Type") != "AWS::Logs::LogGroup":
            violations.append(f"{name}: no access log group of the stack")
            continue
        line = settings.get("Format", "")
        if any(part in line for part in ("requestBody", "responseBody", "header", "authorizer")):
            violations.append(f"{name}: its access log line carries a body, a header or a token's claims")
        for field in ("$context.requestId", "$context.status", "$context.identity.sourceIp"):
            if field not in line:
                violations.append(f"{name}: its access log line lacks {field}")
    return violations


def export_access(template):
    """A function that reads Didomi's export (DIDOMI_EXPORT) may assume only
    the export role, and only when one is given; it reads the export bucket
    itself only when no role is given, and then only under the prefix."""
    violations = []
    for name, function in resources(template, "AWS::Serverless::Function").items():
        if variable(template, function, "DIDOMI_EXPORT") is None:
            continue
        role = function.get("Properties", {}).get("Role")
        role_name = role["Fn::GetAtt"][0] if isinstance(role, dict) and "Fn::GetAtt" in role else None
        policies = template["Resources"].get(role_name, {}).get("Properties", {}).get("Policies", [])
        for policy in policies:
            for entry in policy.get("PolicyDocument", {}).get("Statement", []):
                condition, statement = None, entry
                if isinstance(entry, dict) and "Fn::If" in entry:
                    condition, statement = entry["Fn::If"][0], entry["Fn::If"][1]
                actions = as_list(statement.get("Action", []))
                if any(a.startswith("sts:") for a in actions):
                    if condition != "HasExportRole" or statement.get("Resource") != {"Ref": "DidomiExportRoleArn"}:
                        violations.append(f"{name}: sts:AssumeRole beyond the export role given")
                if any(a.startswith("s3:") for a in actions):
                    if condition != "ReadsExportBucket":
                        violations.append(f"{name}: S3 read even when the export is read through a role")
                    if any(a != "s3:GetObject" and a != "s3:ListBucket" for a in actions):
                        violations.append(f"{name}: S3 actions beyond reading")
                    resource = json.dumps(statement.get("Resource"))
                    if "s3:::*" in resource or ("GetObject" in str(actions) and "DidomiExportPrefix" not in resource):
                        violations.append(f"{name}: S3 read beyond the export prefix")
                    if "ListBucket" in str(actions) and "s3:prefix" not in json.dumps(statement.get("Condition", {})):
                        violations.append(f"{name}: lists the whole export bucket")
    return violations


def check(template):
    return (
        customer_key(template)
        + access_logs(template)
        + wildcards(template)
        + secret_access(template)
        + queue_access(template)
        + export_access(template)
        + own_roles(template)
        + queue_alarms(template)
        + route_auth(template)
    )


def planted(template, change):
    """A copy of the template with `change` applied to it."""
    copied = copy.deepcopy(template)
    change(copied)
    return copied
