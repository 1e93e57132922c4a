"""template.yaml keeps its own rules, and the rules catch what they are for."""

import os

import pytest

from template_rules import (
    export_access,
    access_logs,
    check,
    customer_key,
    load,
    own_roles,
    planted,
    queue_access,
    queue_alarms,
    route_auth,
    secret_access,
    wildcards,
)

TEMPLATE = os.path.join(os.path.dirname(__file__), "..", "..", "template.yaml")


@pytest.fixture(scope="module")
def template():
    return load(TEMPLATE)


def statements_of(template, function):
    """The statements of the function's own role."""
    role = template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    return template["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]


def plain_statements_of(template, function):
    """The statements of the function's own role that hold in every deployment."""
    return [s for s in statements_of(template, function) if "Action" in s]


def test_the_template_follows_its_rules(template):
    assert check(template) == []


def test_the_three_functions_and_both_routes_are_there(template):
    functions = {
        r["Metadata"]["BuildProperties"]["Binary"]: r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Serverless::Function"
    }
    assert set(functions) == {"didomi-to-dynamics", "dynamics-to-didomi", "consent-watch"}
    daily = functions["consent-watch"]["Properties"]["Events"]["Daily"]
    assert daily["Type"] == "ScheduleV2"
    assert daily["Properties"]["ScheduleExpression"] == {"Ref": "WatchSchedule"}
    assert functions["didomi-to-dynamics"]["Properties"]["Events"]["Delivery"]["Properties"]["Path"] == "/didomi"
    assert functions["dynamics-to-didomi"]["Properties"]["Events"]["Delivery"]["Properties"]["Path"] == "/dynamics"


def test_a_planted_wildcard_action_fails(template):
    bad = planted(template, lambda t: statements_of(t, "DidomiToDynamicsFunction").append(
        {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": {"Ref": "ConfigSecretArn"}}))
    assert wildcards(bad) == [
        "DidomiToDynamicsRole: Action 'secretsmanager:*' is a wildcard"
    ]


def test_a_planted_wildcard_resource_fails(template):
    def widen(t):
        statements_of(t, "DynamicsToDidomiFunction")[0]["Resource"] = "*"
    assert wildcards(planted(template, widen)) == [
        "DynamicsToDidomiRole: Resource '*' is a wildcard"
    ]


def test_a_managed_policy_fails(template):
    bad = planted(template, lambda t: t["Resources"]["DidomiToDynamicsFunction"]["Properties"].update(
        {"Policies": ["SecretsManagerReadWrite"]}))
    assert len(wildcards(bad)) == 1


def test_a_function_without_its_secret_permission_fails(template):
    def drop(t):
        statements = statements_of(t, "DynamicsToDidomiFunction")
        statements[:] = [s for s in statements if s.get("Action") != "secretsmanager:GetSecretValue"]
    assert secret_access(planted(template, drop)) == [
        "DynamicsToDidomiFunction: no secretsmanager:GetSecretValue on its configuration secret"
    ]

    def other_secret(t):
        statements_of(t, "DidomiToDynamicsFunction")[0]["Resource"] = {"Ref": "SomeOtherSecret"}
    assert secret_access(planted(template, other_secret)) == [
        "DidomiToDynamicsFunction: no secretsmanager:GetSecretValue on its configuration secret"
    ]


def test_a_route_that_loses_its_authentication_fails(template):
    def open_didomi(t):
        t["Resources"]["DidomiToDynamicsFunction"]["Properties"]["Events"]["Delivery"]["Properties"]["Auth"] = {
            "Authorizer": "NONE"}
    assert route_auth(planted(template, open_didomi)) == [
        "DidomiToDynamicsFunction.Delivery: route /didomi has no authentication"
    ]

    def no_default(t):
        del t["Resources"]["WebhookApi"]["Properties"]["Auth"]["DefaultAuthorizer"]
    assert route_auth(planted(template, no_default)) == ["WebhookApi: no JWT DefaultAuthorizer"]

    def implicit_api(t):
        del t["Resources"]["DidomiToDynamicsFunction"]["Properties"]["Events"]["Delivery"]["Properties"]["ApiId"]
    assert len(route_auth(planted(template, implicit_api))) == 1


def test_a_function_that_cannot_park_or_drain_its_queue_fails(template):
    def drop(t):
        for statement in plain_statements_of(t, "DidomiToDynamicsFunction"):
            if isinstance(statement["Action"], list) and "sqs:SendMessage" in statement["Action"]:
                statement["Action"] = [a for a in statement["Action"] if a != "sqs:ChangeMessageVisibility"]
    assert queue_access(planted(template, drop)) == [
        "DidomiToDynamicsFunction: no sqs:ChangeMessageVisibility on its parked queue"
    ]

    def other_queue(t):
        events = t["Resources"]["DynamicsToDidomiFunction"]["Properties"]["Events"]
        events["Parked"]["Properties"]["Queue"] = {"Fn::GetAtt": ["DidomiToDynamicsParkedQueue", "Arn"]}
    assert queue_access(planted(template, other_queue)) == [
        "DynamicsToDidomiFunction: no SQS event source on its parked queue"
    ]

    def whole_batches(t):
        parked = t["Resources"]["DidomiToDynamicsFunction"]["Properties"]["Events"]["Parked"]["Properties"]
        del parked["FunctionResponseTypes"]
        del parked["ScalingConfig"]
    assert queue_access(planted(template, whole_batches)) == [
        "DidomiToDynamicsFunction: its SQS event source does not take partial batch answers",
        "DidomiToDynamicsFunction: its SQS event source has no maximum concurrency",
    ]

    def short_visibility(t):
        t["Resources"]["DynamicsToDidomiParkedQueue"]["Properties"]["VisibilityTimeout"] = 60
    assert queue_access(planted(template, short_visibility)) == [
        "DynamicsToDidomiFunction: its parked queue's visibility timeout is under six times the function's timeout"
    ]

    def quick_redrive(t):
        t["Resources"]["DynamicsToDidomiParkedQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] = 3
    assert queue_access(planted(template, quick_redrive)) == [
        "DynamicsToDidomiFunction: its parked queue's maxReceiveCount is not the 14 the retry delays are made for"
    ]

    def no_dead_letters(t):
        del t["Resources"]["DidomiToDynamicsParkedQueue"]["Properties"]["RedrivePolicy"]
    assert queue_access(planted(template, no_dead_letters)) == [
        "DidomiToDynamicsFunction: its parked queue has no dead-letter queue"
    ]


def test_each_function_has_its_own_role_without_managed_policies(template):
    def generated_role(t):
        del t["Resources"]["DidomiToDynamicsFunction"]["Properties"]["Role"]
    assert own_roles(planted(template, generated_role)) == [
        "DidomiToDynamicsFunction: no role of its own (SAM would attach AWS managed policies)"
    ]

    def managed(t):
        t["Resources"]["DynamicsToDidomiRole"]["Properties"]["ManagedPolicyArns"] = [
            "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]
    assert own_roles(planted(template, managed)) == ["DynamicsToDidomiRole: managed policies"]

    def other_log_group(t):
        for statement in plain_statements_of(t, "DynamicsToDidomiFunction"):
            if "logs:PutLogEvents" in statement["Action"]:
                statement["Resource"] = {"Fn::GetAtt": ["DidomiToDynamicsLogGroup", "Arn"]}
    assert own_roles(planted(template, other_log_group)) == [
        "DynamicsToDidomiFunction: no logs:CreateLogStream on its log group",
        "DynamicsToDidomiFunction: no logs:PutLogEvents on its log group",
    ]


def test_queue_alarms_exist_and_reach_someone(template):
    def no_dead_letter_alarm(t):
        del t["Resources"]["DynamicsToDidomiDeadLettersAlarm"]
    assert queue_alarms(planted(template, no_dead_letter_alarm)) == [
        "DynamicsToDidomiDeadLetterQueue: no alarm while it holds a record"
    ]

    def slow_age_alarm(t):
        t["Resources"]["DidomiToDynamicsParkedAgeAlarm"]["Properties"]["Threshold"] = 86400
    assert queue_alarms(planted(template, slow_age_alarm)) == [
        "DidomiToDynamicsParkedQueue: no alarm when its oldest record is older than an hour"
    ]

    def managed_key(t):
        t["Resources"]["AlarmTopic"]["Properties"]["KmsMasterKeyId"] = "alias/aws/sns"
    found = queue_alarms(planted(template, managed_key))
    alarms = [n for n, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert len(found) == len(alarms) >= 8
    assert all(v.endswith("its topic uses an AWS managed key CloudWatch cannot publish with") for v in found)


def test_with_a_customer_key_every_secret_queue_log_group_and_topic_names_it(template):
    def service_key(t):
        t["Resources"]["DynamicsToDidomiDeadLetterQueue"]["Properties"].pop("KmsMasterKeyId")
        t["Resources"]["AlarmTopic"]["Properties"]["KmsMasterKeyId"] = "alias/aws/sns"
    assert customer_key(planted(template, service_key)) == [
        "DynamicsToDidomiDeadLetterQueue: KmsMasterKeyId does not name KmsKeyArn when it is given",
        "AlarmTopic: KmsMasterKeyId does not name KmsKeyArn when it is given",
    ]
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::SecretsManager::Secret", "AWS::SQS::Queue", "AWS::Logs::LogGroup", "AWS::SNS::Topic"} <= kinds


def test_the_api_logs_each_request_without_bodies_or_headers(template):
    def with_body(t):
        settings = t["Resources"]["WebhookApi"]["Properties"]["AccessLogSettings"]
        settings["Format"] = settings["Format"].replace("}", ',"body":"$context.requestBody"}')
    assert access_logs(planted(template, with_body)) == [
        "WebhookApi: its access log line carries a body, a header or a token's claims"
    ]

    def none(t):
        del t["Resources"]["WebhookApi"]["Properties"]["AccessLogSettings"]
    assert access_logs(planted(template, none)) == ["WebhookApi: no access log group of the stack"]


def test_the_watch_reads_only_the_export_it_is_given(template):
    assert export_access(template) == []

    def everything(t):
        statements_of(t, "ConsentWatchFunction").append(
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::*"})
    assert export_access(planted(template, everything)) == [
        "ConsentWatchFunction: S3 read even when the export is read through a role",
        "ConsentWatchFunction: S3 read beyond the export prefix",
    ]

    def any_role(t):
        statements_of(t, "ConsentWatchFunction").append(
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "arn:aws:iam::123456789012:role/admin"})
    assert export_access(planted(template, any_role)) == [
        "ConsentWatchFunction: sts:AssumeRole beyond the export role given"
    ]

    def whole_bucket(t):
        for entry in statements_of(t, "ConsentWatchFunction"):
            if "Fn::If" in entry and entry["Fn::If"][1].get("Action") == "s3:ListBucket":
                entry["Fn::If"][1].pop("Condition")
    assert export_access(planted(template, whole_bucket)) == [
        "ConsentWatchFunction: lists the whole export bucket"
    ]


def test_the_watch_alarms_on_drift_registration_and_failed_jobs(template):
    alarmed = {
        r["Properties"].get("MetricName")
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm" and r["Properties"].get("Namespace") == "ConsentSync"
    }
    assert {"ContactsDiffering", "RegistrationMismatch", "FailedWebhookJobs"} <= alarmed
