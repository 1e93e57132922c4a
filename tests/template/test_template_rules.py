"""template.yaml keeps its own rules, and the rules catch what they are for."""

import os

import pytest

from template_rules import check, load, planted, queue_access, route_auth, secret_access, wildcards

TEMPLATE = os.path.join(os.path.dirname(__file__), "..", "..", "template.yaml")


@pytest.fixture(scope="module")
def template():
    return load(TEMPLATE)


def statements_of(template, function):
    return template["Resources"][function]["Properties"]["Policies"][0]["Statement"]


def test_the_template_follows_its_rules(template):
    assert check(template) == []


def test_both_functions_and_both_routes_are_there(template):
    functions = {
        r["Metadata"]["BuildProperties"]["Binary"]: r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Serverless::Function"
    }
    assert set(functions) == {"didomi-to-dynamics", "dynamics-to-didomi"}
    assert functions["didomi-to-dynamics"]["Properties"]["Events"]["Delivery"]["Properties"]["Path"] == "/didomi"
    assert functions["dynamics-to-didomi"]["Properties"]["Events"]["Delivery"]["Properties"]["Path"] == "/dynamics"


def test_a_planted_wildcard_action_fails(template):
    bad = planted(template, lambda t: statements_of(t, "DidomiToDynamicsFunction").append(
        {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": {"Ref": "ConfigSecretArn"}}))
    assert wildcards(bad) == [
        "DidomiToDynamicsFunction.Policies[0]: Action 'secretsmanager:*' is a wildcard"
    ]


def test_a_planted_wildcard_resource_fails(template):
    def widen(t):
        statements_of(t, "DynamicsToDidomiFunction")[0]["Resource"] = "*"
    assert wildcards(planted(template, widen)) == [
        "DynamicsToDidomiFunction.Policies[0]: Resource '*' is a wildcard"
    ]


def test_a_managed_policy_fails(template):
    bad = planted(template, lambda t: t["Resources"]["DidomiToDynamicsFunction"]["Properties"]["Policies"].append(
        "SecretsManagerReadWrite"))
    assert len(wildcards(bad)) == 1


def test_a_function_without_its_secret_permission_fails(template):
    def drop(t):
        t["Resources"]["DynamicsToDidomiFunction"]["Properties"]["Policies"] = []
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


def test_a_function_that_cannot_park_fails(template):
    def drop(t):
        statements = statements_of(t, "DidomiToDynamicsFunction")
        statements[:] = [s for s in statements if s["Action"] != "sqs:SendMessage"]
    assert queue_access(planted(template, drop)) == [
        "DidomiToDynamicsFunction: no sqs:SendMessage on its parked queue"
    ]
