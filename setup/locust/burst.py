# The seeds' BurstAgent as Locust runs it (locustfile_rate_limit.py): the flow setup/compare-load.sh
# and setup/compare-scenario.sh time against `load --scenario burst`.
from locust import HttpUser, task, constant
class BurstAgent(HttpUser):
    wait_time = constant(0)
    def on_start(self):
        r = self.client.post("/api/v1/keys", json={"email": f"burst-{id(self)}@test.invalid"})
        self.headers = {"X-API-Key": r.json()["api_key"]}
    @task
    def search_burst(self):
        with self.client.post("/api/v1/traces/search", json={"q": "test query"}, headers=self.headers, catch_response=True) as resp:
            if resp.status_code in (200, 429):
                resp.success()
            else:
                resp.failure(f"Unexpected status {resp.status_code}")
