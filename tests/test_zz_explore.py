import time
from freshet.ingest import ingest
from freshet.train import train

def test_s3_chain(prefect_api, s3_lake, small_sales):
    uri = s3_lake.land(small_sales, "a.csv")
    print(uri)
    t=time.time()
    st = ingest(uris=[uri], return_state=True)
    print(st, st.message, time.time()-t)
    print(s3_lake.manifest())
    t=time.time()
    r = train()
    print({k:v for k,v in r.items() if k!="metrics"}, time.time()-t)
    print(s3_lake.listing("models","retail_sales"))

def test_bad(prefect_api, lake_env, tiny_sales):
    import polars as pl
    bad = tiny_sales.with_columns(pl.when(pl.col("item_id")==1).then(-1.0).otherwise(pl.col("units_sold")).alias("units_sold"))
    uri = lake_env.land(bad, "b.csv")
    st = ingest(uris=[uri], return_state=True)
    print(repr(st.message))
    print(st.type, st.result(raise_on_failure=False))
