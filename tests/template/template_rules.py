"""The template's own rules, beyond what cfn-lint knows: least privilege,
the configuration secret readable by every function, and authentication on
every route. Each check returns the violations it found, as sentences."""

import copy

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


def statements(template):
    """(where, statement) for every IAM statement the template grants."""
    found = []
    for name, function in resources(template, "AWS::Serverless::Function").items():
        for index, policy in enumerate(function.get("Properties", {}).get("Policies", []) or []):
            where = f"{name}.Policies[{index}]"
            if isinstance(policy, dict) and "Statement" in policy:
                found += [(where, s) for s in as_list(policy["Statement"])]
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
                found += [(name, s) for s in as_list(document.get("Statement", []))]
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


def secret_access(template):
    """Every function has CONFIG_SECRET_ID and may read exactly that secret."""
    violations = []
    default = secret_expression(template)
    for name, function in resources(template, "AWS::Serverless::Function").items():
        properties = function.get("Properties", {})
        own = properties.get("Environment", {}).get("Variables", {}).get("CONFIG_SECRET_ID")
        secret = own or default
        if secret is None:
            violations.append(f"{name}: no CONFIG_SECRET_ID")
            continue
        grants = [
            s
            for where, s in statements({"Resources": {name: function}})
            if s.get("Effect") == "Allow"
            and "secretsmanager:GetSecretValue" in as_list(s.get("Action", []))
            and secret in as_list(s.get("Resource", []))
        ]
        if not grants:
            violations.append(f"{name}: no secretsmanager:GetSecretValue on its configuration secret")
    return violations


def queue_access(template):
    """Every function that parks (PARKED_QUEUE_URL) may send to that queue."""
    violations = []
    globals_env = template.get("Globals", {}).get("Function", {}).get("Environment", {})
    default = globals_env.get("Variables", {}).get("PARKED_QUEUE_URL")
    for name, function in resources(template, "AWS::Serverless::Function").items():
        own = function.get("Properties", {}).get("Environment", {}).get("Variables", {}).get("PARKED_QUEUE_URL")
        queue = own or default
        if not (isinstance(queue, dict) and "Ref" in queue):
            continue
        arn = {"Fn::GetAtt": [queue["Ref"], "Arn"]}
        grants = [
            s
            for where, s in statements({"Resources": {name: function}})
            if s.get("Effect") == "Allow"
            and "sqs:SendMessage" in as_list(s.get("Action", []))
            and arn in as_list(s.get("Resource", []))
        ]
        if not grants:
            violations.append(f"{name}: no sqs:SendMessage on its parked queue")
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


def check(template):
    return wildcards(template) + secret_access(template) + queue_access(template) + route_auth(template)


def planted(template, change):
    """A copy of the template with `change` applied to it."""
    copied = copy.deepcopy(template)
    change(copied)
    return copied
